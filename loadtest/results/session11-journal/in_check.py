import sqlite3, time, os
for kind in ["IN", "OR", "none"]:
    p=f"/tmp/ck_{kind}.db"
    if os.path.exists(p): os.remove(p)
    c=sqlite3.connect(p, isolation_level=None)
    chk = {"IN":"CHECK (state IN ('pending','paid','declined','failed','closed','reversed','refunded'))",
           "OR":"CHECK (state = 'pending' OR state = 'paid' OR state = 'declined' OR state = 'failed' OR state = 'closed' OR state = 'reversed' OR state = 'refunded')",
           "none":""}[kind]
    c.execute(f"CREATE TABLE t (seq INTEGER PRIMARY KEY, trade_no TEXT NOT NULL, state TEXT NOT NULL {chk}) STRICT")
    t=time.perf_counter()
    c.execute("BEGIN")
    for i in range(200000):
        c.execute("INSERT INTO t (trade_no, state) VALUES (?, ?)", (f"T{i}", "pending"))
    c.execute("COMMIT")
    print(kind, round((time.perf_counter()-t)/200000*1e6,2), "us/insert")

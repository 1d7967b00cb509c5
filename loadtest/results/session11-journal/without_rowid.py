import sqlite3, time, os, random, string
def tn(i): return "%08d%s" % (i, ''.join(random.choices(string.ascii_letters, k=14)))
for kind in ["rowid+unique", "without_rowid"]:
    p=f"/tmp/wr_{kind}.db"
    for f in [p, p+"-wal", p+"-shm"]:
        if os.path.exists(f): os.remove(f)
    c=sqlite3.connect(p, isolation_level=None)
    c.execute("PRAGMA page_size=1024"); c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=NORMAL"); c.execute("PRAGMA wal_autocheckpoint=0")
    cols="merchant_id TEXT NOT NULL, order_id TEXT NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL, state TEXT NOT NULL, channel_id TEXT, merchant_data TEXT NOT NULL, created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, next_query_at_ms INTEGER"
    if kind=="rowid+unique":
        c.execute(f"CREATE TABLE s (seq INTEGER PRIMARY KEY, trade_no TEXT NOT NULL UNIQUE, {cols}) STRICT")
    else:
        c.execute(f"CREATE TABLE s (trade_no TEXT PRIMARY KEY, {cols}) STRICT, WITHOUT ROWID")
    n=20000; t=time.perf_counter()
    for i in range(n):
        k=tn(i)
        c.execute("BEGIN IMMEDIATE"); c.execute("INSERT INTO s (trade_no, merchant_id, order_id, amount, currency, state, channel_id, merchant_data, created_at_ms, updated_at_ms, next_query_at_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)", (k, "merchant-0001", "order-%012d"%random.randrange(10**12), 1000, "CNY", "pending", "acq-a", "{}", i, i, i+5000)); c.execute("COMMIT")
        c.execute("BEGIN IMMEDIATE"); c.execute("UPDATE s SET state='paid', updated_at_ms=? WHERE trade_no=? AND state='pending'", (i+1, k)); c.execute("COMMIT")
        if i % 1000 == 999: c.execute("BEGIN IMMEDIATE"); c.execute("DELETE FROM s"); c.execute("COMMIT")
    dt=time.perf_counter()-t
    print(kind, "us/payment %.1f" % (dt/n*1e6), "WAL frames/commit %.2f" % (os.path.getsize(p+"-wal")/(1024+24)/(2*n)))

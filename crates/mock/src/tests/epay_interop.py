"""An epay V1 client written from the contract's signing rule alone, with
Python's hashlib and urllib: nothing here comes from the Rust crate.

    python3 epay_interop.py sign PARAMS_JSON KEY      -> prints the sign
    python3 epay_interop.py verify QUERY KEY           -> prints ok or bad
    python3 epay_interop.py create BASE PID KEY OUT_TRADE_NO NOTIFY_URL
                                                       -> prints mapi.php's answer

Signing rule: every parameter but sign and sign_type, and none with an
empty value, sorted by name (byte order), joined as k=v with &, values not
URL-encoded, the key appended directly, MD5, lowercase hex.
"""

import hashlib
import json
import sys
import urllib.parse
import urllib.request


def sign(params, key):
    kept = [(k, v) for k, v in params.items() if k not in ("sign", "sign_type") and v != ""]
    kept.sort(key=lambda kv: kv[0].encode("utf-8"))
    text = "&".join(k + "=" + v for k, v in kept) + key
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def main(argv):
    command = argv[1]
    if command == "sign":
        print(sign(json.loads(argv[2]), argv[3]))
    elif command == "verify":
        params = dict(urllib.parse.parse_qsl(argv[2], keep_blank_values=True))
        good = params.get("sign") == sign(params, argv[3]) and params.get("sign_type", "MD5") == "MD5"
        print("ok" if good else "bad")
    elif command == "create":
        base, pid, key, out_trade_no, notify_url = argv[2:7]
        params = {
            "pid": pid,
            "type": "alipay",
            "out_trade_no": out_trade_no,
            "notify_url": notify_url,
            "return_url": "",
            "name": "测试商品 & 100% 好+物",
            "money": "12.30",
            "clientip": "10.0.0.1",
            "device": "pc",
            "param": "来自 python",
        }
        params["sign"] = sign(params, key)
        params["sign_type"] = "MD5"
        body = urllib.parse.urlencode(params).encode("ascii")
        request = urllib.request.Request(base + "mapi.php", data=body, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        with urllib.request.urlopen(request, timeout=10) as answer:
            print(answer.read().decode("utf-8"))
    else:
        sys.exit("unknown command " + command)


if __name__ == "__main__":
    main(sys.argv)

import hashlib, hmac, json, os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ["PUSHGATE_EVENT_WEBHOOK_SECRET"].encode()
TOLERANCE = 300  # seconds
seen = set()     # cursors handled (keep it with your data in production)
last = ""        # the last cursor received


def verify(header, body):
    parts = dict(p.strip().split("=", 1) for p in header.split(",") if "=" in p)
    t, sig = parts.get("t", ""), parts.get("v1", "")
    if not t.isdigit() or abs(time.time() - int(t)) > TOLERANCE:
        return False
    want = hmac.new(SECRET, t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, sig)


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        global last
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not verify(self.headers.get("Pushgate-Signature", ""), body):
            self.send_response(401)
            self.end_headers()
            return
        d = json.loads(body)
        if d["cursor"] not in seen:
            if d["follows"] != last:
                print("gap before", d["cursor"], "dropped", d.get("dropped", 0), flush=True)
            seen.add(d["cursor"])
            last = d["cursor"]
            kind = next(k for k in d["event"] if k not in ("time", "cursor"))
            print(d["cursor"], kind, json.dumps(d["event"][kind], sort_keys=True), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()

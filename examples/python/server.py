"""A command app in Python, standard library only: caravan runs it in a snapshot of the
files its environment includes, with its port in argv (${PORT} expanded by caravan), its
inputs as environment variables and all of them in the JSON file $CARAVAN_INPUTS_FILE."""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port = int(sys.argv[sys.argv.index("--port") + 1])
with open(os.environ["CARAVAN_INPUTS_FILE"], encoding="utf-8") as f:
    inputs_file = json.load(f)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/greeting/"):
            name = self.path[len("/greeting/") :]
            body = f"{os.environ['GREETING']}, {name}! (from Python {sys.version_info.major})"
            self.reply(200, "text/plain; charset=utf-8", body)
        elif self.path == "/inputs":
            info = {
                "env": {"GREETING": os.environ.get("GREETING")},
                "file": inputs_file["inputs"],
                "cwd_files": sorted(os.listdir(".")),
            }
            self.reply(200, "application/json", json.dumps(info))
        else:
            self.reply(404, "text/plain", "not found")

    def reply(self, status, content_type, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


print(f"python-greeter listening on {port}", flush=True)
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()

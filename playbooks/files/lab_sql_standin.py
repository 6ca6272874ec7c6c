# Copyright: Contributors to the bastionless.ssm project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A stand-in for a private database in the SSM lab, and its migration client.

The lab has no RDS, so playbooks/db-migration-tunnel.yml starts this on a lab node with Run Command: SQLite served
over TCP, one JSON line per request and per answer. The playbook then reaches it only through a Session Manager
port forwarding tunnel, as it would reach RDS, and applies the migrations with this script's client. It is a
teaching aid for the lab, not a database to use.

    lab_sql_standin.py serve --port 25432 --db /var/lib/app.sqlite [--idle-exit 300]
    lab_sql_standin.py migrate --port 41231 playbooks/files/migrations
    lab_sql_standin.py query --port 41231 "SELECT * FROM accounts"
    lab_sql_standin.py shutdown --port 41231

Requests: {"sql": "...", "script": false} runs one statement (its rows come back), {"script": true} runs several
in one transaction, {"shutdown": true} stops the server. Answers: {"ok": true, "rows": [...]} or
{"ok": false, "error": "..."}.
"""

import argparse
import glob
import json
import os
import socket
import socketserver
import sqlite3
import sys
import threading
import time

CONNECT_SECONDS = 60.0


# --- the server -----------------------------------------------------------------------------------------------


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        self.server.touch()
        for line in self.rfile:
            self.server.touch()
            try:
                request = json.loads(line)
            except ValueError:
                self.answer({"ok": False, "error": "not a JSON line"})
                continue
            if request.get("shutdown"):
                self.answer({"ok": True, "rows": []})
                threading.Thread(target=self.server.shutdown, daemon=True).start()
                return
            self.answer(self.server.execute(request.get("sql", ""), bool(request.get("script"))))

    def answer(self, message):
        self.wfile.write((json.dumps(message) + "\n").encode())
        self.wfile.flush()


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port, database):
        super().__init__(("127.0.0.1", port), Handler)
        self.database = database
        self.lock = threading.Lock()
        self.last = time.monotonic()

    def touch(self):
        self.last = time.monotonic()

    def execute(self, sql, script):
        with self.lock:
            connection = sqlite3.connect(self.database)
            try:
                if script:
                    connection.executescript("BEGIN;\n" + sql + "\nCOMMIT;")
                    return {"ok": True, "rows": []}
                rows = connection.execute(sql).fetchall()
                connection.commit()
                return {"ok": True, "rows": [list(r) for r in rows]}
            except sqlite3.Error as error:
                return {"ok": False, "error": str(error)}
            finally:
                connection.close()


def serve(args):
    os.makedirs(os.path.dirname(os.path.abspath(args.db)), exist_ok=True)
    try:
        server = Server(args.port, args.db)
    except OSError as error:
        print(f"port {args.port} is taken ({error}); a stand-in may already run there")
        return 0
    print(f"serving {args.db} on 127.0.0.1:{args.port}", flush=True)

    def idle_watch():
        while True:
            time.sleep(1)
            if time.monotonic() - server.last > args.idle_exit:
                print(f"idle for {args.idle_exit} s, stopping", flush=True)
                server.shutdown()
                return

    threading.Thread(target=idle_watch, daemon=True).start()
    server.serve_forever()
    server.server_close()
    print("stopped", flush=True)
    return 0


# --- the client -----------------------------------------------------------------------------------------------


class Client:
    def __init__(self, port, connect_seconds=CONNECT_SECONDS):
        self.port = port
        self.connect_seconds = connect_seconds
        self.connection = None
        self.reader = None

    def connect(self):
        """Connect, retrying while the far end is not there yet (a tunnel can be up before the database)."""
        deadline = time.monotonic() + self.connect_seconds
        while True:
            try:
                self.connection = socket.create_connection(("127.0.0.1", self.port), timeout=30)
                self.reader = self.connection.makefile("rb")
                self.request({"sql": "SELECT 1"})
                return self
            except (OSError, ConnectionError) as error:
                if self.connection is not None:
                    self.connection.close()
                if time.monotonic() >= deadline:
                    raise SystemExit(f"no database answers on 127.0.0.1:{self.port}: {error}") from None
                time.sleep(1)

    def request(self, message):
        self.connection.sendall((json.dumps(message) + "\n").encode())
        line = self.reader.readline()
        if not line:
            raise ConnectionError("the connection closed")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise SystemExit(f"the database refused {message}: {answer.get('error')}")
        return answer["rows"]


def migrate(args):
    client = Client(args.port, args.connect_seconds).connect()
    client.request({"sql": "CREATE TABLE IF NOT EXISTS schema_migrations "
                           "(version TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"})
    applied = {row[0] for row in client.request({"sql": "SELECT version FROM schema_migrations"})}
    done = 0
    for path in sorted(glob.glob(os.path.join(args.directory, "*.sql"))):
        name = os.path.basename(path)
        if name in applied:
            continue
        with open(path, encoding="utf-8") as handle:
            script = handle.read()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        record = f"INSERT INTO schema_migrations (version, applied_at) VALUES ('{name}', '{stamp}');"
        client.request({"sql": script + "\n" + record, "script": True})
        print(f"applied {name}")
        done += 1
    if not done:
        print("nothing applied: the schema is up to date")
    count = client.request({"sql": "SELECT count(*) FROM schema_migrations"})[0][0]
    print(f"schema version {count}")
    return 0


def query(args):
    for row in Client(args.port).connect().request({"sql": args.sql}):
        print("\t".join(str(v) for v in row))
    return 0


def shutdown(args):
    Client(args.port).connect().request({"shutdown": True})
    print("the stand-in stopped")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve")
    serve_parser.add_argument("--port", type=int, required=True)
    serve_parser.add_argument("--db", required=True)
    serve_parser.add_argument("--idle-exit", type=float, default=300.0)
    migrate_parser = commands.add_parser("migrate")
    migrate_parser.add_argument("--port", type=int, required=True)
    migrate_parser.add_argument("--connect-seconds", type=float, default=CONNECT_SECONDS,
                                help="how long to retry while no database answers (default 60)")
    migrate_parser.add_argument("directory")
    query_parser = commands.add_parser("query")
    query_parser.add_argument("--port", type=int, required=True)
    query_parser.add_argument("sql")
    shutdown_parser = commands.add_parser("shutdown")
    shutdown_parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    return {"serve": serve, "migrate": migrate, "query": query, "shutdown": shutdown}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""An IT-MCP audit database (mcp_audit.db, the exact table of IT-MCP's note) of N rows, for the
import benchmark in BENCHMARKS.md: python3 scripts/make-it-mcp-history.py FILE N. Every other row
uses SQLite's timestamp spelling (as IT-MCP's mixed writers did); the content is seeded, so the
same N gives the same file."""
import json
import random
import sqlite3
import sys
import time
import uuid
n=int(sys.argv[2]); path=sys.argv[1]
c=sqlite3.connect(path)
c.execute("""CREATE TABLE audit_logs (id TEXT PRIMARY KEY, timestamp TEXT NOT NULL, caller_id TEXT NOT NULL, tool TEXT NOT NULL,
operation TEXT NOT NULL, decision_action TEXT NOT NULL, decision_reason TEXT NOT NULL, risk_level TEXT NOT NULL,
requires_approval BOOLEAN NOT NULL, execution_status TEXT, execution_duration_ms INTEGER, side_effects TEXT, error TEXT,
approver TEXT, approved_at TEXT, context TEXT NOT NULL, decision TEXT NOT NULL)""")
random.seed(7)
def rows():
    for i in range(n):
        s=1700000000+i*3
        t=time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(s))
        ts = t+'.000Z' if i%2 else t.replace('T',' ')
        act=random.choice(['allow','allow','deny','require_approval'])
        yield (str(uuid.UUID(int=random.getrandbits(128))), ts, 'claude-%d'%(i%5), 'ssh-exec','executeCommand',act,
               'matched policy', random.choice(['LOW','MEDIUM','HIGH','CRITICAL']), act=='require_approval',
               'success' if act=='allow' else None, 120 if act=='allow' else None, '["file.write"]', None, None, None,
               json.dumps({"command":"systemctl status nginx","host":"web-%d"%(i%20)}), json.dumps({"action":act,"reasons":["ok"]}))
c.executemany("INSERT INTO audit_logs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows())
c.commit()

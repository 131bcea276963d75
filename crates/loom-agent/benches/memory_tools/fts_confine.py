# Times the many-users full-text query as the SQLite store ran it before the small-owner
# confinement (owner filtered in the join only) and after (also `okey : token` inside the match).
import sqlite3, sys, time, random, statistics, os
path = sys.argv[1]; user = sys.argv[2] if len(sys.argv) > 2 else 'bench-user-0'
con = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
okey = con.execute("SELECT f.okey FROM loom_mem_fts f JOIN loom_mem_items i ON i.seq = f.rowid WHERE i.user_id = ? LIMIT 1", (user,)).fetchone()[0]
words = set()
for (t,) in con.execute("SELECT text FROM loom_mem_items WHERE kind='fact' LIMIT 20000"):
    words.update(w.strip('.:').lower() for w in t.split()[2:])
words = sorted(w for w in words if w.isalpha())
rng = random.Random(99)
queries = [[rng.choice(words) for _ in range(3)] for _ in range(300)]
SQL = """SELECT i.id FROM loom_mem_fts f JOIN loom_mem_items i ON i.seq = f.rowid
 WHERE loom_mem_fts MATCH ?1 AND i.user_id = ?2 AND i.agent = '' AND i.active = 1 ORDER BY f.rank LIMIT 20"""
def run(confined):
    ts = []
    for q in queries:
        fts = 'text : (' + ' OR '.join(f'"{w}"' for w in q) + ')'
        if confined: fts = f'okey : "{okey}" AND ' + fts
        t = time.perf_counter(); rows = con.execute(SQL, (fts, user)).fetchall(); ts.append(time.perf_counter() - t)
    ts.sort(); return ts[len(ts)//2]*1e3, ts[int(len(ts)*0.99)]*1e3, statistics.mean(ts)*1e3
for _ in range(2):
    for confined in (False, True):
        p50, p99, mean = run(confined)
        print(f"{os.path.basename(path)} {'confined (after)' if confined else 'join filter only (before)'}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, mean {mean:.2f} ms; load {open('/proc/loadavg').read().split()[:3]}")

# Copies a bench SQLite memory file (same generator and seeds as the bench's PostgreSQL data) into
# a PostgreSQL schema as CSV for COPY: what the bench's one-add_fact-per-item generation would
# write, without 10^5 commits.
import sqlite3, struct, sys, csv
path = sys.argv[1]
con = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
cols = "id,user_id,agent,kind,key,text,data,importance,run_id,active,extracted,valid_from,valid_to,recorded_at,superseded_by,source_run,embed_model,embedding"
w = csv.writer(sys.stdout)
for row in con.execute(f"SELECT {cols} FROM loom_mem_items ORDER BY seq"):
    row = list(row)
    row[9] = 't' if row[9] else 'f'
    row[10] = 't' if row[10] else 'f'
    emb = row[17]
    if emb is not None:
        n = len(emb) // 4
        row[17] = '{' + ','.join(repr(x) for x in struct.unpack(f'<{n}f', emb)) + '}'
    w.writerow(['\\N' if v is None else v for v in row])

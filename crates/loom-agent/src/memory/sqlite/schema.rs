//! The SQLite memory store's tables, indexes and triggers (schema version 1; the knowledge
//! tables of version 2 are in `knowledge.rs`).

pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS loom_mem_items (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL, agent TEXT NOT NULL,
        kind TEXT NOT NULL, key TEXT, text TEXT NOT NULL, data TEXT NOT NULL,
        importance REAL NOT NULL, run_id TEXT,
        active INTEGER NOT NULL, extracted INTEGER NOT NULL,
        valid_from INTEGER NOT NULL, valid_to INTEGER, recorded_at INTEGER NOT NULL,
        superseded_by TEXT, source_run TEXT,
        embed_model TEXT, embedding BLOB);
    CREATE INDEX IF NOT EXISTS loom_mem_items_recent ON loom_mem_items (user_id, agent, active, recorded_at);
    CREATE UNIQUE INDEX IF NOT EXISTS loom_mem_items_run ON loom_mem_items (user_id, agent, run_id)
        WHERE kind = 'episode';
    CREATE INDEX IF NOT EXISTS loom_mem_items_same ON loom_mem_items (user_id, agent, lower(text))
        WHERE kind = 'fact' AND active = 1;
    CREATE INDEX IF NOT EXISTS loom_mem_items_key ON loom_mem_items (user_id, agent, key)
        WHERE kind = 'fact' AND active = 1;
    CREATE INDEX IF NOT EXISTS loom_mem_items_pending ON loom_mem_items (user_id, agent, extracted)
        WHERE extracted = 0;
    CREATE VIRTUAL TABLE IF NOT EXISTS loom_mem_fts USING fts5(text, okey, tokenize = 'porter unicode61');
    CREATE TABLE IF NOT EXISTS loom_mem_blocks (
        user_id TEXT NOT NULL, agent TEXT NOT NULL, name TEXT NOT NULL, text TEXT NOT NULL,
        updated_at INTEGER NOT NULL, PRIMARY KEY (user_id, agent, name)) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS loom_mem_writes (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
    INSERT OR IGNORE INTO loom_mem_writes (id, n) VALUES (1, 0);
    CREATE TABLE IF NOT EXISTS loom_mem_owner_writes (
        user_id TEXT NOT NULL, agent TEXT NOT NULL, n INTEGER NOT NULL,
        PRIMARY KEY (user_id, agent)) WITHOUT ROWID;
    CREATE TRIGGER IF NOT EXISTS loom_mem_items_inserted AFTER INSERT ON loom_mem_items BEGIN
        UPDATE loom_mem_writes SET n = n + 1 WHERE id = 1;
        INSERT INTO loom_mem_owner_writes (user_id, agent, n)
            VALUES (NEW.user_id, NEW.agent, (SELECT n FROM loom_mem_writes WHERE id = 1))
            ON CONFLICT (user_id, agent) DO UPDATE SET n = excluded.n;
    END;
    CREATE TRIGGER IF NOT EXISTS loom_mem_items_deleted AFTER DELETE ON loom_mem_items BEGIN
        UPDATE loom_mem_writes SET n = n + 1 WHERE id = 1;
        INSERT INTO loom_mem_owner_writes (user_id, agent, n)
            VALUES (OLD.user_id, OLD.agent, (SELECT n FROM loom_mem_writes WHERE id = 1))
            ON CONFLICT (user_id, agent) DO UPDATE SET n = excluded.n;
    END;
    CREATE TRIGGER IF NOT EXISTS loom_mem_items_updated
        AFTER UPDATE OF user_id, agent, active, embed_model, embedding ON loom_mem_items BEGIN
        UPDATE loom_mem_writes SET n = n + 1 WHERE id = 1;
        INSERT INTO loom_mem_owner_writes (user_id, agent, n)
            VALUES (OLD.user_id, OLD.agent, (SELECT n FROM loom_mem_writes WHERE id = 1))
            ON CONFLICT (user_id, agent) DO UPDATE SET n = excluded.n;
        INSERT INTO loom_mem_owner_writes (user_id, agent, n)
            VALUES (NEW.user_id, NEW.agent, (SELECT n FROM loom_mem_writes WHERE id = 1))
            ON CONFLICT (user_id, agent) DO UPDATE SET n = excluded.n;
    END;";

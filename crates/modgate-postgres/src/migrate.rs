//! Versioned schema migrations of the shared database, applied at start. Every replica runs
//! them; a transaction-scoped advisory lock serialises the replicas that start at once, so each
//! migration is applied exactly once and a replica never sees half a schema. A database whose
//! schema is newer than this build's is refused (an older replica must not write into it).

use crate::error::PgError;
use crate::ledger::now_unix;
use crate::pool::Pool;

/// The advisory lock key of migrations ("modgate" and 1).
const MIGRATION_LOCK: i64 = 0x6d6f_6467_6174_6501;

/// Schema migrations; entry `i` brings the schema from version `i` to `i + 1`. Append only:
/// never edit a migration that has shipped. Text compared by range or sorted is `COLLATE "C"`:
/// bytewise, as SQLite compares, so prefix listings agree.
pub const MIGRATIONS: &[&str] = &[
    // 1: the ledger's entries and history, and the cluster's change events.
    r#"CREATE TABLE ledger_entries (
        module          TEXT COLLATE "C" NOT NULL,
        version         TEXT COLLATE "C" NOT NULL,
        artifact        TEXT COLLATE "C" NOT NULL CHECK (artifact IN ('mod', 'zip', 'info')),
        sha256          TEXT    NOT NULL,
        h1              TEXT,
        size            BIGINT  NOT NULL CHECK (size >= 0),
        first_seen_unix BIGINT  NOT NULL,
        source          TEXT    NOT NULL,
        accepted_by     TEXT,
        PRIMARY KEY (module, version, artifact)
    );
    CREATE TABLE ledger_history (
        id                  BIGSERIAL PRIMARY KEY,
        module              TEXT COLLATE "C" NOT NULL,
        version             TEXT COLLATE "C" NOT NULL,
        artifact            TEXT    NOT NULL,
        old_sha256          TEXT,
        old_h1              TEXT,
        old_size            BIGINT,
        old_first_seen_unix BIGINT,
        old_source          TEXT,
        old_accepted_by     TEXT,
        new_sha256          TEXT    NOT NULL,
        new_h1              TEXT,
        new_size            BIGINT  NOT NULL,
        operator            TEXT    NOT NULL,
        reason              TEXT    NOT NULL,
        accepted_unix       BIGINT  NOT NULL
    );
    CREATE INDEX ledger_history_by_version ON ledger_history (module, version);
    CREATE TABLE cluster_events (
        id       BIGSERIAL PRIMARY KEY,
        kind     TEXT   NOT NULL,
        module   TEXT   NOT NULL,
        version  TEXT,
        artifact TEXT,
        origin   TEXT   NOT NULL,
        at_unix  BIGINT NOT NULL
    );"#,
    // 2: the fetch leases of cluster-wide miss coalescing.
    r#"CREATE TABLE fetch_leases (
        key        TEXT COLLATE "C" PRIMARY KEY,
        holder     TEXT   NOT NULL,
        expires_ms BIGINT NOT NULL
    );"#,
    // 3: the fetched-by-identity index (`fetched:` in a cluster), shared by every replica.
    r#"CREATE TABLE fetched_records (
        id       BIGSERIAL PRIMARY KEY,
        at_ms    BIGINT NOT NULL,
        identity TEXT COLLATE "C" NOT NULL,
        source   TEXT COLLATE "C" NOT NULL,
        module   TEXT COLLATE "C" NOT NULL,
        version  TEXT COLLATE "C" NOT NULL,
        kind     TEXT NOT NULL CHECK (kind IN ('mod', 'zip')),
        sha256   TEXT,
        h1       TEXT
    );
    CREATE INDEX fetched_records_by_identity ON fetched_records (identity, at_ms);
    CREATE INDEX fetched_records_by_time ON fetched_records (at_ms);"#,
    // 4: the company's checksum database (logs by name; records, stored hashes, signed heads),
    // append-only.
    r#"CREATE TABLE sumdb_logs (
        name         TEXT COLLATE "C" PRIMARY KEY,
        verifier_key TEXT   NOT NULL,
        created_unix BIGINT NOT NULL
    );
    CREATE TABLE sumdb_records (
        log     TEXT COLLATE "C" NOT NULL REFERENCES sumdb_logs (name),
        id      BIGINT NOT NULL CHECK (id >= 0),
        path    TEXT COLLATE "C" NOT NULL,
        version TEXT COLLATE "C" NOT NULL,
        text    BYTEA  NOT NULL,
        PRIMARY KEY (log, id),
        UNIQUE (log, path, version)
    );
    CREATE TABLE sumdb_hashes (
        log  TEXT COLLATE "C" NOT NULL REFERENCES sumdb_logs (name),
        idx  BIGINT NOT NULL CHECK (idx >= 0),
        hash BYTEA  NOT NULL CHECK (length(hash) = 32),
        PRIMARY KEY (log, idx)
    );
    CREATE TABLE sumdb_heads (
        log         TEXT COLLATE "C" NOT NULL REFERENCES sumdb_logs (name),
        size        BIGINT NOT NULL CHECK (size >= 0),
        hash        BYTEA  NOT NULL CHECK (length(hash) = 32),
        signed_note BYTEA  NOT NULL,
        signed_unix BIGINT NOT NULL,
        PRIMARY KEY (log, size)
    );
    CREATE FUNCTION sumdb_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'the checksum database is append-only'; END
    $$;
    CREATE TRIGGER sumdb_logs_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON sumdb_logs
        FOR EACH STATEMENT EXECUTE FUNCTION sumdb_append_only();
    CREATE TRIGGER sumdb_records_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON sumdb_records
        FOR EACH STATEMENT EXECUTE FUNCTION sumdb_append_only();
    CREATE TRIGGER sumdb_hashes_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON sumdb_hashes
        FOR EACH STATEMENT EXECUTE FUNCTION sumdb_append_only();
    CREATE TRIGGER sumdb_heads_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON sumdb_heads
        FOR EACH STATEMENT EXECUTE FUNCTION sumdb_append_only();"#,
];

/// The newest schema version this build writes and understands.
pub fn supported() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Brings the database's schema up to [`supported`], under the migration lock.
pub fn migrate(pool: &std::sync::Arc<Pool>) -> Result<(), PgError> {
    let mut conn = pool.get()?;
    let result = apply(pool, &mut conn);
    if result.is_err() {
        conn.broken();
    }
    result
}

/// Checks, changing nothing, that the database's schema is this build's: for the commands,
/// which must not migrate a cluster's database under its replicas (an older replica would then
/// refuse to start) and may run against a read-only standby.
pub fn check_schema(pool: &std::sync::Arc<Pool>) -> Result<(), PgError> {
    let mut conn = pool.get()?;
    let exists: bool = conn
        .query_one("SELECT to_regclass('modgate_schema') IS NOT NULL", &[])
        .and_then(|row| row.try_get(0))
        .map_err(|e| {
            conn.broken();
            pool.error("reading the schema version", &e)
        })?;
    let found: i64 = if exists {
        conn.query_one("SELECT COALESCE(MAX(version), 0) FROM modgate_schema", &[])
            .and_then(|row| row.try_get(0))
            .map_err(|e| {
                conn.broken();
                pool.error("reading the schema version", &e)
            })?
    } else {
        0
    };
    let supported = supported();
    let store = pool.name().to_owned();
    match found.cmp(&supported) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(PgError::SchemaTooNew {
            store,
            found,
            supported,
        }),
        std::cmp::Ordering::Less => Err(PgError::SchemaTooOld {
            store,
            found,
            supported,
        }),
    }
}

fn apply(pool: &Pool, conn: &mut postgres::Client) -> Result<(), PgError> {
    let err = |step| move |e: postgres::Error| pool.error(step, &e);
    let mut tx = conn.transaction().map_err(err("starting the migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(err("taking the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS modgate_schema (
            version      BIGINT PRIMARY KEY,
            applied_unix BIGINT NOT NULL
        )",
    )
    .map_err(err("creating the schema table"))?;
    let found: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM modgate_schema", &[])
        .and_then(|row| row.try_get(0))
        .map_err(err("reading the schema version"))?;
    let supported = supported();
    if found > supported {
        return Err(PgError::SchemaTooNew {
            store: pool.name().to_owned(),
            found,
            supported,
        });
    }
    let start = usize::try_from(found.max(0)).unwrap_or(usize::MAX);
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.batch_execute(migration)
            .map_err(err("applying a migration"))?;
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO modgate_schema (version, applied_unix) VALUES ($1, $2)",
            &[&version, &now_unix()],
        )
        .map_err(err("recording a migration"))?;
        log::info!("{}: schema migrated to version {version}", pool.name());
    }
    tx.commit().map_err(err("committing the migration"))
}

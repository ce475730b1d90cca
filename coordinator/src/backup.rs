//! Backups of the coordinator's database, taken while it serves, and restores from them.
//!
//! `backup` copies the live WAL database with SQLite's `VACUUM INTO` on a connection of its own: a
//! read transaction, so the copy is one consistent snapshot of everything committed (hence
//! acknowledged) before it started, and the coordinator's writer is never blocked. The copy is
//! written to a temporary file (owner-only, 0600), fsynced, checked, and renamed into place.
//!
//! `restore` checks that a file is a tokbench coordinator database (integrity check, the migrations
//! table with migrations this build knows, the tables) and copies it over the database path the
//! same way (temporary file + rename), removing the old database's `-wal`/`-shm` files so they are
//! never replayed into the restored copy. A coordinator started on the restored database resumes:
//! jobs that were leased at backup time get a fresh lease at start and go back to the queue when it
//! expires (their worker, if it still has the result, completes them at the same attempt).
//!
//! Artifact files are not in the database: the rows name files under the artifacts directory,
//! which a backup does not copy (copy that directory alongside; its files are written once).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Row};

/// What a backup or a restore holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Highest migration applied (the schema version).
    pub schema_version: i64,
    pub sweeps: i64,
    pub jobs: i64,
    pub runs: i64,
    pub artifacts: i64,
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sweeps, {} jobs, {} runs, {} artifact records (schema version {})",
            self.sweeps, self.jobs, self.runs, self.artifacts, self.schema_version
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the database {} does not exist: give the --database path the coordinator serves", .0.display())]
    NoDatabase(PathBuf),
    #[error("the backup file {} does not exist: give the path `tokbench-coordinator backup --out` wrote", .0.display())]
    NoBackup(PathBuf),
    #[error("{} already exists: choose another --out, or pass --force to replace it", .0.display())]
    OutExists(PathBuf),
    #[error(
        "the database {} already exists: restore into a new --database path, or stop the coordinator and pass --force to replace it",
        .0.display()
    )]
    DatabaseExists(PathBuf),
    #[error("{} and {} are the same file: give the backup and the database different paths", .0.display(), .1.display())]
    SameFile(PathBuf, PathBuf),
    #[error(
        "the database {} is in use (a coordinator or another program has it open): stop the coordinator before restoring over it",
        .0.display()
    )]
    DatabaseInUse(PathBuf),
    #[error("{} is not a usable tokbench coordinator backup: {why}", path.display())]
    NotABackup { path: PathBuf, why: String },
    #[error(
        "{} has schema version {found}, newer than this coordinator knows ({known}): restore it with the tokbench version that made it",
        path.display()
    )]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("{} is not valid UTF-8: SQLite's VACUUM INTO needs a UTF-8 path; use another path", .0.display())]
    NonUtf8Path(PathBuf),
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database {}: {source}", path.display())]
    Db {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
}

pub type Result<T, E = BackupError> = std::result::Result<T, E>;

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BackupError + 'a {
    move |source| BackupError::Io { what, path: path.to_path_buf(), source }
}

fn db(path: &Path) -> impl FnOnce(sqlx::Error) -> BackupError + '_ {
    move |source| BackupError::Db { path: path.to_path_buf(), source }
}

/// Copies the database `db` (live or not) to `out`, a new file with owner-only permissions.
/// Refuses an existing `out` unless `force`. Returns what the copy holds.
pub async fn backup(database: &Path, out: &Path, force: bool) -> Result<Snapshot> {
    if !database.is_file() {
        return Err(BackupError::NoDatabase(database.to_path_buf()));
    }
    check_distinct(out, database)?;
    if out.exists() && !force {
        return Err(BackupError::OutExists(out.to_path_buf()));
    }
    let tmp = TempFile::create_beside(out, "backup")?;
    let mut conn = connect(database, Mode::ReadWrite).await?;
    vacuum_into(&mut conn, database, tmp.path()).await?;
    conn.close().await.map_err(db(database))?;
    sync_file(tmp.path())?;
    // The copy is checked as a restore would check it, so a backup that succeeded restores.
    let snapshot = {
        let mut copy = connect(tmp.path(), Mode::Immutable).await?;
        let s = check_tokbench_db(&mut copy, tmp.path()).await.map_err(|e| rename_path(e, out))?;
        copy.close().await.map_err(db(out))?;
        s
    };
    if out.exists() && !force {
        return Err(BackupError::OutExists(out.to_path_buf()));
    }
    tmp.persist(out)?;
    Ok(snapshot)
}

/// Replaces (or creates) the database `database` with the backup `from`, after checking it is a
/// tokbench coordinator database this build can serve. Refuses an existing `database` unless
/// `force`, and always refuses one that is open (a coordinator running on it).
pub async fn restore(from: &Path, database: &Path, force: bool) -> Result<Snapshot> {
    if !from.is_file() {
        return Err(BackupError::NoBackup(from.to_path_buf()));
    }
    check_distinct(from, database)?;
    if database.exists() {
        if !force {
            return Err(BackupError::DatabaseExists(database.to_path_buf()));
        }
        ensure_not_in_use(database).await?;
    }
    let mut src = connect(from, Mode::ReadOnly).await?;
    let snapshot = check_tokbench_db(&mut src, from).await?;
    let tmp = TempFile::create_beside(database, "restore")?;
    vacuum_into(&mut src, from, tmp.path()).await?;
    src.close().await.map_err(db(from))?;
    sync_file(tmp.path())?;
    // A WAL left by the old database would be replayed into the restored one: remove it first.
    for suffix in ["-wal", "-shm", "-journal"] {
        let side = with_suffix(database, suffix);
        match std::fs::remove_file(&side) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove the stale", &side)(e)),
        }
    }
    tmp.persist(database)?;
    Ok(snapshot)
}

/// Creates the database file with owner-only permissions (0600) if it does not exist yet, so
/// that SQLite (which gives its `-wal` and `-shm` files the database file's permissions) never
/// makes it readable by others. An existing file is left as it is.
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    match private_create_new(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates a directory (and missing parents) with owner-only permissions (0700) on Unix. An
/// existing directory is left as it is.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(path)
}

fn private_create_new(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

// ------------------------------------------------------------------ helpers

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// An existing database, maybe live (WAL): a normal connection, never creating the file.
    ReadWrite,
    ReadOnly,
    /// A file nobody else writes (our fresh copy): no locks, no -wal/-shm created beside it.
    Immutable,
}

async fn connect(path: &Path, mode: Mode) -> Result<SqliteConnection> {
    let opts = SqliteConnectOptions::from_str("sqlite://")
        .map_err(db(path))?
        .filename(path)
        .create_if_missing(false)
        .busy_timeout(Duration::from_secs(5))
        .read_only(mode != Mode::ReadWrite)
        .immutable(mode == Mode::Immutable);
    opts.connect().await.map_err(|e| not_a_db_or(e, path))
}

/// "file is not a database" and friends are the user's mistake, not a database failure.
fn not_a_db_or(e: sqlx::Error, path: &Path) -> BackupError {
    if let sqlx::Error::Database(d) = &e {
        // SQLITE_NOTADB (26), SQLITE_CORRUPT (11)
        if matches!(primary_code(d.as_ref()), Some(26 | 11)) {
            return BackupError::NotABackup { path: path.to_path_buf(), why: format!("{} (is it a SQLite file made by `tokbench-coordinator backup`?)", d.message()) };
        }
    }
    BackupError::Db { path: path.to_path_buf(), source: e }
}

fn primary_code(d: &dyn sqlx::error::DatabaseError) -> Option<i32> {
    d.code().and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff)
}

async fn vacuum_into(conn: &mut SqliteConnection, source: &Path, target: &Path) -> Result<()> {
    let target_str = target.to_str().ok_or_else(|| BackupError::NonUtf8Path(target.to_path_buf()))?;
    // VACUUM INTO writes into an existing file only if it is empty: ours is, created 0600.
    sqlx::query("VACUUM INTO ?").bind(target_str).execute(&mut *conn).await.map_err(|e| not_a_db_or(e, source))?;
    Ok(())
}

/// Integrity, the migrations this build knows, the tables; returns the counts.
async fn check_tokbench_db(conn: &mut SqliteConnection, path: &Path) -> Result<Snapshot> {
    let not = |why: String| BackupError::NotABackup { path: path.to_path_buf(), why };
    let problems: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check").fetch_all(&mut *conn).await.map_err(|e| not_a_db_or(e, path))?;
    if problems != ["ok"] {
        let shown: Vec<_> = problems.iter().take(5).cloned().collect();
        return Err(not(format!("PRAGMA integrity_check found damage: {}", shown.join("; "))));
    }
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'").fetch_all(&mut *conn).await.map_err(db(path))?;
    if !tables.iter().any(|t| t == "_sqlx_migrations") {
        return Err(not("it has no _sqlx_migrations table, so it is no tokbench coordinator database".into()));
    }
    let applied = sqlx::query("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version").fetch_all(&mut *conn).await.map_err(db(path))?;
    let known = sqlx::migrate!("../migrations");
    let known_max = known.migrations.iter().map(|m| m.version).max().unwrap_or(0);
    let mut schema_version = 0;
    for row in &applied {
        let version: i64 = row.try_get("version").map_err(db(path))?;
        let success: bool = row.try_get("success").map_err(db(path))?;
        let checksum: Vec<u8> = row.try_get("checksum").map_err(db(path))?;
        if !success {
            return Err(not(format!("migration {version} is recorded as failed (the database was left half-migrated)")));
        }
        if version > known_max {
            return Err(BackupError::TooNew { path: path.to_path_buf(), found: version, known: known_max });
        }
        match known.migrations.iter().find(|m| m.version == version) {
            Some(m) if *m.checksum == *checksum => {}
            Some(_) => return Err(not(format!("its migration {version} differs from this build's: it was made by a different tokbench version"))),
            None => return Err(not(format!("its migration {version} is unknown to this build: it was made by a different tokbench version"))),
        }
        schema_version = schema_version.max(version);
    }
    if applied.is_empty() {
        return Err(not("no migration was ever applied to it".into()));
    }
    for t in ["sweeps", "jobs", "runs", "artifacts"] {
        if !tables.iter().any(|x| x == t) {
            return Err(not(format!("it has no {t} table")));
        }
    }
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    Ok(Snapshot {
        schema_version,
        sweeps: count("SELECT COUNT(*) FROM sweeps").fetch_one(&mut *conn).await.map_err(db(path))?,
        jobs: count("SELECT COUNT(*) FROM jobs").fetch_one(&mut *conn).await.map_err(db(path))?,
        runs: count("SELECT COUNT(*) FROM runs").fetch_one(&mut *conn).await.map_err(db(path))?,
        artifacts: count("SELECT COUNT(*) FROM artifacts").fetch_one(&mut *conn).await.map_err(db(path))?,
    })
}

/// A database another connection has open cannot leave WAL mode (that needs every other
/// connection gone): try it without waiting. The database is about to be replaced, so the
/// journal-mode change of a database nobody uses does no harm.
async fn ensure_not_in_use(database: &Path) -> Result<()> {
    let opts = SqliteConnectOptions::from_str("sqlite://").map_err(db(database))?.filename(database).create_if_missing(false).busy_timeout(Duration::ZERO);
    let mut conn = match opts.connect().await {
        Ok(c) => c,
        Err(sqlx::Error::Database(d)) if matches!(primary_code(d.as_ref()), Some(5 | 6)) => return Err(BackupError::DatabaseInUse(database.to_path_buf())),
        // Not a database at all (or unreadable): nothing can be serving it; it is replaced.
        Err(_) => return Ok(()),
    };
    let mode: std::result::Result<String, sqlx::Error> = sqlx::query_scalar("PRAGMA journal_mode = DELETE").fetch_one(&mut conn).await;
    let _ = conn.close().await;
    match mode {
        Ok(m) if m.eq_ignore_ascii_case("delete") => Ok(()),
        Ok(_) => Err(BackupError::DatabaseInUse(database.to_path_buf())),
        Err(sqlx::Error::Database(d)) if matches!(primary_code(d.as_ref()), Some(5 | 6)) => Err(BackupError::DatabaseInUse(database.to_path_buf())),
        Err(_) => Ok(()),
    }
}

fn rename_path(e: BackupError, to: &Path) -> BackupError {
    match e {
        BackupError::NotABackup { why, .. } => BackupError::NotABackup { path: to.to_path_buf(), why },
        other => other,
    }
}

fn check_distinct(a: &Path, b: &Path) -> Result<()> {
    if let (Ok(ca), Ok(cb)) = (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        if ca == cb {
            return Err(BackupError::SameFile(a.to_path_buf(), b.to_path_buf()));
        }
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        if a == with_suffix(b, suffix) || b == with_suffix(a, suffix) {
            return Err(BackupError::SameFile(a.to_path_buf(), b.to_path_buf()));
        }
    }
    Ok(())
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_file(p: &Path) -> Result<()> {
    std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(io("fsync", p))
}

/// An owner-only temporary file beside its destination (same filesystem, so the final rename is
/// atomic); removed unless persisted.
struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    fn create_beside(dest: &Path, what: &str) -> Result<TempFile> {
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "tokbench.db".into());
        let dir = parent_dir(dest);
        for n in 0..100u32 {
            let path = dir.join(format!(".{name}.{what}-{}-{n}.tmp", std::process::id()));
            match private_create_new(&path) {
                Ok(_) => return Ok(TempFile { path: Some(path) }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("create a temporary file in", &dir)(e)),
            }
        }
        Err(io("create a temporary file in", &dir)(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "100 stale temporary files: remove them")))
    }

    fn path(&self) -> &Path {
        self.path.as_deref().expect("temporary file")
    }

    /// Renames into `dest` and fsyncs the directory, so the rename survives a crash.
    fn persist(mut self, dest: &Path) -> Result<()> {
        let path = self.path.take().expect("temporary file");
        if let Err(e) = std::fs::rename(&path, dest) {
            let _ = std::fs::remove_file(&path);
            return Err(io("move the copy to", dest)(e));
        }
        let dir = parent_dir(dest);
        std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io("fsync the directory", &dir))?;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

'use strict';

// Apply pending migrations/*.sql in name order, each in its own transaction,
// recording each in schema_migrations. Idempotent: a second run applies nothing.
// Exits non-zero on the first failure (that migration is rolled back).

const fs = require('fs');
const path = require('path');
const config = require('../src/config');
const { createPool } = require('../src/clients');

const MIGRATIONS_DIR = path.join(__dirname, '..', 'migrations');

async function main() {
  const cfg = config.load();
  const pool = createPool({ ...cfg.db, max: 1 }, { connectionTimeoutMillis: 10000 });
  const client = await pool.connect();
  try {
    // One migrator at a time (two hosts deploying at once must not race).
    // Session-level lock: released when this connection ends.
    await client.query("SELECT pg_advisory_lock(hashtext('tpe-app:schema_migrations'))");
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version     text PRIMARY KEY,
      applied_at  timestamptz DEFAULT now()
    )`);

    const files = fs.readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).sort();
    const { rows } = await client.query('SELECT version FROM schema_migrations');
    const present = new Set(rows.map((r) => r.version));

    let applied = 0;
    let already = 0;
    for (const file of files) {
      const version = path.basename(file, '.sql');
      if (present.has(version)) {
        already += 1;
        continue;
      }
      const sql = fs.readFileSync(path.join(MIGRATIONS_DIR, file), 'utf8');
      try {
        await client.query('BEGIN');
        await client.query(sql);
        await client.query('INSERT INTO schema_migrations (version) VALUES ($1)', [version]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        throw new Error(`migration ${version} failed: ${err.message}`);
      }
      console.log(`applied ${version}`);
      applied += 1;
    }
    console.log(`migrations: ${applied} applied, ${already} already present`);
  } finally {
    client.release();
    await pool.end();
  }
}

main().catch((err) => {
  console.error(`migrate: ${err.message}`);
  process.exit(1);
});

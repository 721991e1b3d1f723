'use strict';

// Load every contractor bundle from PostgreSQL into Redis
// (contractor:<id>, 300 s TTL), the same value GET /api/contractors/:id caches.

const config = require('../src/config');
const { createPool, createRedis } = require('../src/clients');
const queries = require('../src/queries');

async function main() {
  const cfg = config.load();
  const pool = createPool({ ...cfg.db, max: 1 }, { connectionTimeoutMillis: 10000 });
  const redis = createRedis(cfg.redis, { retry: false });
  try {
    await redis.connect();
    const rows = await queries.allContractorBundles(pool);
    const ttl = cfg.cache.contractorTtl;
    const multi = redis.multi();
    for (const row of rows) {
      // Through JSON so dates are stored exactly as the API returns them.
      multi.set(`contractor:${row.id}`, JSON.stringify(row), { EX: ttl });
    }
    if (rows.length > 0) await multi.exec();
    console.log(`warmed ${rows.length} keys`);
  } finally {
    await pool.end();
    if (redis.isOpen) await redis.quit();
  }
}

main().catch((err) => {
  console.error(`warm-cache: ${err.message}`);
  process.exit(1);
});

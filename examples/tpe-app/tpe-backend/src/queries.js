'use strict';

// SQL shared by the server and scripts/warm-cache.js, so the cache holds the
// same contractor bundle whichever of them filled it.

const CONTRACTOR_BUNDLE = `
  SELECT c.id, c.name, c.email, c.created_at,
         count(s.id)::int AS session_count,
         max(s.created_at) AS last_session_at
    FROM contractors c
    LEFT JOIN ai_concierge_sessions s ON s.contractor_id = c.id`;

async function contractorBundle(pool, id) {
  const { rows } = await pool.query(`${CONTRACTOR_BUNDLE} WHERE c.id = $1 GROUP BY c.id`, [id]);
  return rows[0] || null;
}

async function allContractorBundles(pool) {
  const { rows } = await pool.query(`${CONTRACTOR_BUNDLE} GROUP BY c.id ORDER BY c.id`);
  return rows;
}

async function eventContext(pool, id) {
  const { rows } = await pool.query(
    `SELECT e.id, e.name, e.starts_at,
            (SELECT count(*)::int FROM contractors) AS contractor_count,
            (SELECT count(*)::int FROM ai_concierge_sessions
              WHERE state <> 'closed') AS open_sessions
       FROM events e
      WHERE e.id = $1`,
    [id],
  );
  return rows[0] ? { ...rows[0], generated_at: new Date().toISOString() } : null;
}

module.exports = { contractorBundle, allContractorBundles, eventContext };

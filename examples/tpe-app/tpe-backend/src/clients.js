'use strict';

// PostgreSQL pool and Redis client, shared by the server and the scripts.

const { Pool } = require('pg');
const { createClient } = require('redis');

function createPool(db, { connectionTimeoutMillis = 2000 } = {}) {
  const pool = new Pool({
    host: db.host,
    port: db.port,
    database: db.database,
    user: db.user,
    password: db.password,
    max: db.max,
    connectionTimeoutMillis,
    idleTimeoutMillis: 30000,
    application_name: 'tpe-backend',
  });
  // An idle client losing its connection emits 'error' on the pool; without a
  // listener that would crash the process. The next query reconnects.
  pool.on('error', (err) => {
    console.error(`postgres: idle client error: ${err.message}`);
  });
  return pool;
}

// For the long-running server: reconnect forever with back-off, and fail
// commands at once while disconnected (disableOfflineQueue) so a Redis outage
// degrades to "read from PostgreSQL" instead of hanging requests.
function createRedis(redisConfig, { retry = true } = {}) {
  let lastError = '';
  const client = createClient({
    socket: {
      host: redisConfig.host,
      port: redisConfig.port,
      connectTimeout: 2000,
      reconnectStrategy: retry
        ? (attempt) => Math.min(100 * 2 ** attempt, 3000)
        : false,
    },
    disableOfflineQueue: true,
  });
  client.on('error', (err) => {
    // Log each distinct error once instead of on every reconnect attempt.
    if (err.message !== lastError) {
      lastError = err.message;
      console.error(`redis: ${err.message}`);
    }
  });
  client.on('ready', () => {
    if (lastError) console.log('redis: connection restored');
    lastError = '';
  });
  return client;
}

// Run fn() (sync throw or rejection alike) and reject if it takes over ms.
function withTimeout(fn, ms, what) {
  let timer;
  const promise = Promise.resolve().then(fn);
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

module.exports = { createPool, createRedis, withTimeout };

'use strict';

// TPE sample backend: Express 4 + PostgreSQL + Redis read-through cache.
// Knobs (see README): config/latency.json or TPE_LATENCY_MS, config/boot.json.
// Never log the config object or the environment: they hold DB_PASSWORD.

const net = require('net');
const express = require('express');
const config = require('./config');
const { createPool, createRedis, withTimeout } = require('./clients');
const queries = require('./queries');
const stateMachine = require('./stateMachine');

// Crash knob: a release committed with {"crashOnBoot": true} never comes up.
if (config.bootConfig().crashOnBoot === true) {
  throw new Error('crashOnBoot is set in config/boot.json: refusing to start');
}

const cfg = config.load();
const pool = createPool(cfg.db);
const redis = createRedis(cfg.redis);
// Do not await: the server starts (and /api/health answers) while Redis is down;
// node-redis keeps reconnecting in the background.
redis.connect().catch((err) => console.error(`redis: connect failed: ${err.message}`));

const app = express();
app.disable('x-powered-by');
app.set('trust proxy', 'loopback');

let shuttingDown = false;

// While shutting down, answer on keep-alive sockets with Connection: close so
// clients reconnect (to another cluster worker) instead of reusing this one.
app.use((req, res, next) => {
  if (shuttingDown) res.set('Connection', 'close');
  next();
});

// Latency knob: delay every /api request.
if (cfg.latencyMs > 0) {
  app.use('/api', (req, res, next) => setTimeout(next, cfg.latencyMs));
}

function parseId(raw) {
  return /^[0-9]{1,9}$/.test(raw) ? Number(raw) : null;
}

async function cacheGet(key) {
  if (!redis.isReady) return null;
  try {
    const raw = await withTimeout(() => redis.get(key), 500, 'redis GET');
    return raw === null ? null : JSON.parse(raw);
  } catch (err) {
    console.error(`redis: GET failed: ${err.message}`);
    return null;
  }
}

async function cacheSet(key, value, ttl) {
  if (!redis.isReady) return;
  try {
    await withTimeout(() => redis.set(key, JSON.stringify(value), { EX: ttl }), 500, 'redis SET');
  } catch (err) {
    console.error(`redis: SET failed: ${err.message}`);
  }
}

// Read-through cache: Redis first, PostgreSQL on a miss (or when Redis is down).
async function readThrough(res, key, ttl, load) {
  const cached = await cacheGet(key);
  if (cached !== null) {
    res.set('X-Cache', 'HIT');
    return cached;
  }
  res.set('X-Cache', 'MISS');
  const value = await load();
  if (value !== null) await cacheSet(key, value, ttl);
  return value;
}

const asyncRoute = (fn) => (req, res, next) => Promise.resolve(fn(req, res, next)).catch(next);

app.get('/api/health', asyncRoute(async (req, res) => {
  const [redisState, dbState] = await Promise.all([
    withTimeout(() => redis.ping(), 1000, 'redis PING').then(() => 'ok', () => 'error'),
    withTimeout(() => pool.query('SELECT 1'), 1500, 'postgres SELECT 1').then(() => 'ok', () => 'error'),
  ]);
  res.set('Cache-Control', 'no-store');
  res.status(200).json({
    status: 'healthy',
    timestamp: new Date().toISOString(),
    environment: cfg.nodeEnv,
    version: cfg.version,
    redis: redisState,
    database: dbState,
    pid: process.pid,
    uptimeSeconds: Math.round(process.uptime()),
    pool: {
      max: cfg.db.max,
      total: pool.totalCount,
      idle: pool.idleCount,
      waiting: pool.waitingCount,
    },
  });
}));

app.get('/api/state-machine/diagram', (req, res) => {
  res.json(stateMachine.diagram());
});

app.get('/api/state-machine/metadata', (req, res) => {
  res.json(stateMachine.metadata());
});

// Contractor bundle: contractor row + concierge session summary, cached 5 min.
app.get('/api/contractors/:id', asyncRoute(async (req, res) => {
  const id = parseId(req.params.id);
  if (id === null) return res.status(400).json({ error: 'invalid contractor id' });
  const bundle = await readThrough(res, `contractor:${id}`, cfg.cache.contractorTtl,
    () => queries.contractorBundle(pool, id));
  if (bundle === null) return res.status(404).json({ error: 'contractor not found' });
  return res.json(bundle);
}));

// Event context: event row + attendance figures, cached 1 min.
app.get('/api/events/:id/context', asyncRoute(async (req, res) => {
  const id = parseId(req.params.id);
  if (id === null) return res.status(400).json({ error: 'invalid event id' });
  const context = await readThrough(res, `event:${id}`, cfg.cache.eventTtl,
    () => queries.eventContext(pool, id));
  if (context === null) return res.status(404).json({ error: 'event not found' });
  return res.json(context);
}));

app.use('/api', (req, res) => res.status(404).json({ error: 'not found' }));

// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  console.error(`error: ${req.method} ${req.path}: ${err.message}`);
  if (res.headersSent) return;
  res.status(503).json({ error: 'service unavailable' });
});

const server = app.listen(cfg.port, () => {
  console.log(
    `tpe-backend ${cfg.version} listening on port ${cfg.port} ` +
      `(env=${cfg.nodeEnv}, pid=${process.pid}, latencyMs=${cfg.latencyMs}, ` +
      `redis=${cfg.redis.host}:${cfg.redis.port}, ` +
      `db=${cfg.db.user}@${cfg.db.host}:${cfg.db.port}/${cfg.db.database}, poolMax=${cfg.db.max})`,
  );
  // PM2 cluster mode with wait_ready: tell PM2 this worker can take traffic.
  if (process.send) process.send('ready');
});
server.on('error', (err) => {
  console.error(`tpe-backend: cannot listen on port ${cfg.port}: ${err.message}`);
  process.exit(1);
});

async function shutdown(signal) {
  if (shuttingDown) return;
  shuttingDown = true;
  console.log(`tpe-backend: ${signal} received, shutting down`);
  // Leave before PM2's kill_timeout (5 s) would SIGKILL us.
  setTimeout(() => {
    console.error('tpe-backend: graceful shutdown timed out, exiting');
    process.exit(1);
  }, 4000).unref();
  // Stop accepting connections, and let keep-alive sockets drain: each next
  // response carries Connection: close (above), so a busy client hangs up
  // cleanly after it. http.Server#close() would also destroy every socket that
  // is idle at this instant (Node 19+), racing a client that is just sending
  // its next request on it (ECONNRESET). So stop the listener with
  // net.Server#close(), give clients a moment, then close what is still idle.
  await new Promise((resolve) => {
    net.Server.prototype.close.call(server, () => resolve());
    setTimeout(() => {
      server.closeIdleConnections();
      setInterval(() => server.closeIdleConnections(), 250).unref();
    }, 1000).unref();
  });
  await Promise.allSettled([
    redis.isReady ? redis.quit() : redis.isOpen ? redis.disconnect() : Promise.resolve(),
    pool.end(),
  ]);
  console.log('tpe-backend: stopped');
  process.exit(0);
}

process.on('SIGINT', () => shutdown('SIGINT'));
process.on('SIGTERM', () => shutdown('SIGTERM'));

'use strict';

// Configuration from the environment, with the knob files in config/.
// Nothing here is ever logged as a whole: it holds the database password.

const fs = require('fs');
const path = require('path');

const CONFIG_DIR = path.join(__dirname, '..', 'config');

// The deploy tool links the 0600 shared env file into the backend folder as `.env`, so
// secrets reach the app without passing through PM2's process list. The process
// environment wins over the file.
function loadDotEnv(file = path.join(__dirname, '..', '.env')) {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (err.code === 'ENOENT') return;
    throw new Error(`cannot read ${file}: ${err.code}`);
  }
  for (const line of text.split('\n')) {
    const match = line.match(/^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/);
    if (match && process.env[match[1]] === undefined) process.env[match[1]] = match[2];
  }
}

loadDotEnv();

function readJson(name, fallback) {
  const file = path.join(CONFIG_DIR, name);
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    if (err.code === 'ENOENT') return fallback;
    throw new Error(`cannot read ${file}: ${err.message}`);
  }
}

function intFromEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number.parseInt(raw, 10);
  if (!Number.isFinite(value) || value < 0) {
    throw new Error(`${name} must be a non-negative integer`);
  }
  return value;
}

// Latency knob: TPE_LATENCY_MS overrides config/latency.json.
function latencyMs() {
  if (process.env.TPE_LATENCY_MS !== undefined && process.env.TPE_LATENCY_MS !== '') {
    return intFromEnv('TPE_LATENCY_MS', 0);
  }
  const file = readJson('latency.json', {});
  const value = Number(file.latencyMs || 0);
  return Number.isFinite(value) && value > 0 ? value : 0;
}

function bootConfig() {
  return readJson('boot.json', {});
}

function appVersion() {
  if (process.env.APP_VERSION) return process.env.APP_VERSION;
  return require('../package.json').version;
}

function load() {
  return {
    port: intFromEnv('PORT', 5000),
    nodeEnv: process.env.NODE_ENV || 'development',
    version: appVersion(),
    latencyMs: latencyMs(),
    redis: {
      host: process.env.REDIS_HOST || '127.0.0.1',
      port: intFromEnv('REDIS_PORT', 6379),
    },
    db: {
      host: process.env.DB_HOST || '127.0.0.1',
      port: intFromEnv('DB_PORT', 5432),
      database: process.env.DB_NAME || 'tpedb',
      user: process.env.DB_USER || 'tpe',
      password: process.env.DB_PASSWORD || undefined,
      max: intFromEnv('DB_POOL_MAX', 10),
    },
    cache: {
      contractorTtl: 300, // contractor bundles: 5 minutes
      eventTtl: 60, // event context: 1 minute
    },
  };
}

module.exports = { load, bootConfig, latencyMs };

// PM2 process file of the TPE sample app. It documents how the app is run;
// TPE Ops renders its own ecosystem file from a template at deploy time.
//
// PM2 resolves a relative `cwd` against the directory pm2 was run from, and it
// loads this file through require(), which resolves symlinks: __dirname is the
// real release directory, never a `current` symlink. To keep PM2's cwd pointing
// through `current` (so `pm2 reload` after a switch serves the new release),
// set TPE_APP_ROOT=/path/to/current when starting.
//
// Secrets (DB_PASSWORD, ...) do not belong here: PM2 passes the environment of
// the shell that runs `pm2 start`, or use an env file the deploy tool writes.

const path = require('path');

const ROOT = process.env.TPE_APP_ROOT || __dirname;

module.exports = {
  apps: [
    {
      name: 'tpe-backend',
      cwd: path.join(ROOT, 'tpe-backend'),
      script: 'src/server.js',
      exec_mode: 'cluster',
      instances: 2,
      // server.js calls process.send('ready') once it listens.
      wait_ready: true,
      listen_timeout: 10000,
      kill_timeout: 5000,
      // PORT defaults to 5000 in server.js.
      env: {
        NODE_ENV: 'production',
      },
    },
    {
      name: 'tpe-frontend',
      cwd: path.join(ROOT, 'tpe-front-end'),
      // npm workspaces hoist `next` to the root node_modules; the script path
      // is resolved relative to cwd.
      script: '../node_modules/next/dist/bin/next',
      args: 'start -p 3000',
      exec_mode: 'cluster',
      instances: 1,
      kill_timeout: 5000,
      env: {
        NODE_ENV: 'production',
        NEXT_TELEMETRY_DISABLED: '1',
      },
    },
  ],
};

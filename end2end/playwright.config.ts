import { defineConfig } from '@playwright/test';
import * as os from 'node:os';
import * as path from 'node:path';
import * as fs from 'node:fs';
import * as crypto from 'node:crypto';
import { ADMIN_PASSWORD } from './tests/pages/portal';
import { realm, issuerFor } from './tests/pages/realm';

// The server under test: the release binary built by scripts/build-site.sh, on a loopback port
// chosen by scripts/test.sh (E2E_PORT), with a throw-away SQLite database. Beside it, a real
// OpenID provider dressed as a Keycloak realm (oidc/realm.mjs) on E2E_OIDC_PORT.
const port = Number(process.env.E2E_PORT ?? 3900);
const oidcPort = Number(process.env.E2E_OIDC_PORT ?? port + 50);
const baseURL = `http://127.0.0.1:${port}`;
const issuer = issuerFor(oidcPort);
const root = path.resolve(__dirname, '..');
const binary = process.env.E2E_BINARY ?? path.join(root, 'target', 'release', 'countersign');
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'countersign-e2e-'));
// Every process that loads this file (the runner and each worker) makes a folder: each removes
// its own when it exits (the runner after it has stopped the servers).
process.on('exit', () => fs.rmSync(dataDir, { recursive: true, force: true }));

// The shipped policy, except that `ssh-sudo` jobs run here instead of on a host over SSH (there
// is no SSH target in a test run): the server's own process executor runs the approved command
// with `sh -c`, so an approved job really executes and reports its output.
const policyFile = path.join(dataDir, 'policy.toml');
const shipped = fs.readFileSync(path.join(root, 'policies', 'default.toml'), 'utf8');
const localSudo = [
  '[executors.ssh-sudo]',
  'kind = "process"',
  'description = "e2e: runs the approved command on the test machine"',
  'argv = ["/bin/sh", "-c", "{args.command}"]',
  'shell = true',
  'timeout = "30s"',
  'env = ["PATH"]',
  '',
].join('\n');
const e2ePolicy = shipped.replace(/\[executors\.ssh-sudo\][\s\S]*?\n(?=\n)/, localSudo);
if (e2ePolicy === shipped) throw new Error('policies/default.toml has no [executors.ssh-sudo] block to replace');
// Staging hosts are being moved over in shadow mode (shadow-mode.spec.ts): their calls are
// decided and recorded, and let through unless CRITICAL.
const shadowPolicy = e2ePolicy + [
  '',
  '[tools.staging-exec]',
  'description = "Run a command on a staging host (e2e: in shadow mode while it is tuned)"',
  'mode = "shadow"',
  '[tools.staging-exec.operations.run]',
  'risk = "HIGH"',
  'requires = ["ssh-linux"]',
  'description = "Run a shell command"',
  'shell_args = ["command"]',
  'effects = "require_approval"',
  'unknown_commands = "require_approval"',
  '',
].join('\n');
// The MCP gateway's journey: the official filesystem server from npm behind `/mcp`, its tools
// mapped to a `files` policy tool (reading LOW, writing CRITICAL), serving a scratch folder.
// The runner makes the folder; its workers (which load this file again) find it in the env.
const mcpFilesRoot = process.env.E2E_MCP_FILES ?? path.join(dataDir, 'mcp-files');
if (!fs.existsSync(mcpFilesRoot)) {
  fs.mkdirSync(mcpFilesRoot);
  fs.writeFileSync(path.join(mcpFilesRoot, 'motd.txt'), 'served by the npm filesystem server\n');
}
const mcpPolicy = [
  '',
  '[tools.files]',
  'description = "Files, through the MCP filesystem server (e2e)"',
  '[tools.files.operations.read]',
  'risk = "LOW"',
  'requires = ["ssh-linux"]',
  'description = "Read a file"',
  'path_args = ["path"]',
  '[tools.files.operations.write]',
  'risk = "CRITICAL"',
  'requires = ["local-sudo"]',
  'description = "Write a file"',
  'path_args = ["path"]',
  '',
  '[mcp.upstreams.files.tools.read_text_file]',
  'tool = "files"',
  'operation = "read"',
  '[mcp.upstreams.files.tools.write_file]',
  'tool = "files"',
  'operation = "write"',
  'target_arg = "path"',
  '',
].join('\n');
fs.writeFileSync(policyFile, shadowPolicy + mcpPolicy);
const configFile = path.join(dataDir, 'countersign.toml');
fs.writeFileSync(
  configFile,
  [
    'mcp_hold_secs = 80',
    'mcp_progress_secs = 1',
    '[[mcp_upstreams]]',
    'name = "files"',
    'command = "node"',
    `args = [${JSON.stringify(path.join(__dirname, 'node_modules', '@modelcontextprotocol', 'server-filesystem', 'dist', 'index.js'))}, ${JSON.stringify(mcpFilesRoot)}]`,
    'env = ["PATH", "HOME"]',
    '',
  ].join('\n'),
);
process.env.E2E_MCP_FILES = mcpFilesRoot; // the tests' workers inherit it
process.env.E2E_OIDC_PORT = String(oidcPort); // the tests' workers inherit it
// A fresh evidence-bundle signing key per run (the tests verify with the served public key).
const exportSigningKey = crypto.randomBytes(32).toString('base64');

// The server's settings. The runner's are the ones in force: its workers (which load this file
// again, with other folders) read them from the environment, to start `countersign mcp` on the
// same database (journey 7).
const serverEnv: Record<string, string> = process.env.E2E_SERVER_ENV
  ? JSON.parse(process.env.E2E_SERVER_ENV)
  : {
      COUNTERSIGN_CONFIG: configFile,
      COUNTERSIGN_BIND: `127.0.0.1:${port}`,
      COUNTERSIGN_DATABASE_URL: `sqlite://${path.join(dataDir, 'e2e.db')}`,
      COUNTERSIGN_LOG_LEVEL: 'info',
      COUNTERSIGN_ADMIN_PASSWORD: ADMIN_PASSWORD,
      COUNTERSIGN_PUBLIC_URL: baseURL,
      COUNTERSIGN_OIDC_ISSUER: issuer,
      COUNTERSIGN_OIDC_CLIENT_ID: realm.clients.portal.id,
      COUNTERSIGN_OIDC_CLIENT_SECRET: realm.clients.portal.secret,
      // Both ways to sign in, so one server serves the Keycloak and the local-account tests.
      COUNTERSIGN_LOCAL_SIGN_IN: 'true',
      COUNTERSIGN_POLICY_FILE: policyFile,
      COUNTERSIGN_EXPORT_SIGNING_KEY: exportSigningKey,
      // IT-MCP's client asks on behalf of the person talking to the assistant.
      COUNTERSIGN_API_DELEGATING_CALLERS: realm.clients.itMcp.id,
      LEPTOS_SITE_ROOT: path.join(root, 'target', 'site'),
    };
process.env.E2E_SERVER_ENV = JSON.stringify(serverEnv);
process.env.E2E_BINARY_PATH = binary;

export default defineConfig({
  testDir: './tests',
  timeout: 30_000,
  expect: { timeout: 10_000 },
  fullyParallel: true,
  forbidOnly: !!process.env.CI,
  retries: 0,
  workers: 2,
  reporter: [['list']],
  use: {
    baseURL,
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    },
  },
  projects: [{ name: 'chromium', use: { browserName: 'chromium' } }],
  webServer: [
    {
      command: 'node oidc/realm.mjs',
      cwd: __dirname,
      url: `${issuer}/.well-known/openid-configuration`,
      reuseExistingServer: false,
      timeout: 30_000,
      stdout: 'pipe',
      stderr: 'pipe',
      env: { E2E_OIDC_PORT: String(oidcPort), E2E_PORTAL_URL: baseURL },
    },
    {
      command: `${binary} serve`,
      cwd: root,
      url: `${baseURL}/readyz`,
      reuseExistingServer: false,
      timeout: 60_000,
      stdout: 'pipe',
      stderr: 'pipe',
      env: serverEnv,
    },
  ],
});

import { test, expect } from '@playwright/test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { UnauthorizedError, type OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import type { OAuthClientInformation, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import { ElicitRequestSchema, ElicitationCompleteNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Portal } from './pages/portal';
import { ApprovalDetailPage } from './pages/approvals';
import { issuer, providerLogin, realm, serviceToken } from './pages/realm';
import { snap } from './pages/evidence';

// Journey 7: an assistant's MCP client (the official TypeScript SDK) talks to Countersign's
// `/mcp` with a bearer token from the OpenID provider; behind it runs the official filesystem
// server from npm. A read is allowed and comes back unchanged; a write is CRITICAL: the client's
// request stays open with progress naming the approval page, dave and erin approve in the
// browser, and the pending request completes with the upstream's own result: the file is
// written, and the job is completed.

const filesRoot = () => {
  const root = process.env.E2E_MCP_FILES;
  if (!root) throw new Error('E2E_MCP_FILES is not set (playwright.config.ts sets it)');
  return fs.realpathSync(root);
};

async function connect(baseURL: string) {
  const token = await serviceToken();
  const client = new Client({ name: 'countersign-e2e-assistant', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL('/mcp', baseURL), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  return client;
}

type Content = { type: string; text?: string }[];
const textOf = (result: { content?: unknown }) =>
  ((result.content ?? []) as Content).map((c) => c.text ?? '').join('\n');

test('an MCP client without a token is refused with the protected-resource challenge', async ({ request }) => {
  const answer = await request.post('/mcp', {
    headers: { accept: 'application/json, text/event-stream', 'content-type': 'application/json' },
    data: { jsonrpc: '2.0', id: 1, method: 'initialize', params: {} },
  });
  expect(answer.status()).toBe(401);
  expect(answer.headers()['www-authenticate']).toContain('resource_metadata=');
  const metadata = await request.get('/.well-known/oauth-protected-resource');
  expect(metadata.status()).toBe(200);
  expect((await metadata.json()).authorization_servers?.length).toBeGreaterThan(0);
});

test('an MCP write is held for two approvers in the portal, then runs once and answers the waiting client', async ({ browser, baseURL, request }, testInfo) => {
  test.setTimeout(120_000);
  const root = filesRoot();
  const client = await connect(baseURL!);
  try {
    // tools/list: the upstream's tools the policy maps, with their risk.
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    expect(names).toContain('read_text_file');
    expect(names).toContain('write_file');
    expect(names).not.toContain('move_file'); // not mapped: hidden
    expect(tools.find((t) => t.name === 'write_file')?.description).toContain('CRITICAL');

    // A read is allowed and comes back as the upstream wrote it.
    const read = await client.callTool({ name: 'read_text_file', arguments: { path: path.join(root, 'motd.txt') } });
    expect(read.isError).toBeFalsy();
    expect(textOf(read)).toContain('served by the npm filesystem server');

    // A tool the policy does not map is denied with the reason, as a tool error.
    const moved = await client.callTool({
      name: 'move_file',
      arguments: { source: path.join(root, 'motd.txt'), destination: path.join(root, 'gone.txt') },
    });
    expect(moved.isError).toBe(true);
    expect(textOf(moved)).toContain('denied');
    expect(fs.existsSync(path.join(root, 'motd.txt'))).toBe(true);

    // A write needs two approvals: the call stays open, with progress naming the page.
    const target = path.join(root, `e2e-${Date.now().toString(36)}.txt`);
    const progress: string[] = [];
    const pending = client.callTool(
      { name: 'write_file', arguments: { path: target, content: 'approved content\n' } },
      undefined,
      {
        onprogress: (p) => progress.push(p.message ?? ''),
        timeout: 110_000,
        resetTimeoutOnProgress: true,
      },
    );
    await expect.poll(() => progress.find((m) => m.includes('/approvals/')), { timeout: 15_000 }).toBeTruthy();
    const message = progress.find((m) => m.includes('/approvals/'))!;
    expect(message).toMatch(/waiting for 2 of 2 approvals/);
    const jobId = message.match(/\/approvals\/([^\s/]+)/)![1];
    expect(fs.existsSync(target)).toBe(false);

    // Dave and erin approve in the browser.
    for (const [who, reason, quorum] of [
      ['dave', 'the e2e scratch folder: fine', '1/2'],
      ['erin', 'second pair of eyes', '2/2'],
    ] as const) {
      const context = await browser.newContext();
      const page = await context.newPage();
      await new Portal(page).signInWithProvider(who, `/approvals/${jobId}`);
      const detail = new ApprovalDetailPage(page);
      await expect(page.getByTestId('approval-title')).toContainText('files');
      await detail.approve(reason);
      await expect(detail.quorum).toHaveText(quorum);
      await snap(page, testInfo, `${who}-approved-${quorum.replace('/', '-of-')}`);
      await context.close();
    }

    // The client's own request completes with the filesystem server's answer.
    const written = await pending;
    expect(written.isError).toBeFalsy();
    expect(textOf(written)).toContain('Successfully wrote');
    expect(fs.readFileSync(target, 'utf8')).toBe('approved content\n');

    // The job ran once, by the gateway, and says so.
    const job = await request.get(`/api/v1/jobs/${jobId}`, {
      headers: { authorization: `Bearer ${await serviceToken()}` },
    });
    expect(job.status()).toBe(200);
    expect(await job.json()).toMatchObject({ job_id: jobId, status: 'completed' });
  } finally {
    await client.close();
  }
});

/** What an MCP client application keeps to sign its person in (the SDK's OAuth provider
 * interface): a public client of the realm, PKCE, a loopback redirect the browser never
 * reaches (the test reads the code off it). */
class AssistantSignIn implements OAuthClientProvider {
  authorizationUrl?: URL;
  private verifier = '';
  private saved?: OAuthTokens;
  get redirectUrl() {
    return realm.assistant.redirect;
  }
  get clientMetadata() {
    return {
      client_name: 'Countersign e2e assistant',
      redirect_uris: [realm.assistant.redirect],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  clientInformation(): OAuthClientInformation {
    return { client_id: realm.assistant.id };
  }
  tokens() {
    return this.saved;
  }
  saveTokens(tokens: OAuthTokens) {
    this.saved = tokens;
  }
  redirectToAuthorization(url: URL) {
    this.authorizationUrl = url;
  }
  saveCodeVerifier(verifier: string) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }
}

test('a person signs an MCP client in through the realm; their held write links to the approval page by URL elicitation, and a denial ends it', async ({ browser, baseURL, request }, testInfo) => {
  test.setTimeout(90_000);
  const root = filesRoot();
  const endpoint = new URL('/mcp', baseURL);
  const signIn = new AssistantSignIn();
  const client = new Client(
    { name: 'countersign-e2e-signed-in-assistant', version: '1.0.0' },
    { capabilities: { elicitation: { url: {} } } },
  );
  const links: { url: string; elicitationId: string; message: string }[] = [];
  client.setRequestHandler(ElicitRequestSchema, async (elicit) => {
    const params = elicit.params as { mode?: string; url?: string; elicitationId?: string; message: string };
    if (params.mode === 'url') links.push({ url: params.url!, elicitationId: params.elicitationId!, message: params.message });
    return { action: 'accept' };
  });
  const completed: string[] = [];
  client.setNotificationHandler(ElicitationCompleteNotificationSchema, (done) => {
    completed.push(done.params.elicitationId);
  });

  // No token yet: the SDK follows the challenge to the protected-resource metadata, then to
  // the realm, and asks for the person to sign in.
  const first = new StreamableHTTPClientTransport(endpoint, { authProvider: signIn });
  await expect(client.connect(first)).rejects.toThrow(UnauthorizedError);
  expect(signIn.authorizationUrl?.toString()).toContain(`${issuer()}/protocol/openid-connect/auth`);
  expect(signIn.authorizationUrl?.searchParams.get('resource')).toBe(endpoint.toString());
  expect(signIn.authorizationUrl?.searchParams.get('code_challenge_method')).toBe('S256');

  // Alice signs in at the realm in a browser; the code comes back to the client's redirect.
  const browserContext = await browser.newContext();
  const page = await browserContext.newPage();
  let code: string | null = null;
  await page.route(`${realm.assistant.redirect}**`, async (route) => {
    code = new URL(route.request().url()).searchParams.get('code');
    await route.fulfill({ contentType: 'text/plain', body: 'You may close this window.' });
  });
  await page.goto(signIn.authorizationUrl!.toString());
  await providerLogin(page, 'alice');
  await expect.poll(() => code, { timeout: 15_000 }).toBeTruthy();
  await browserContext.close();
  // The transport that met the challenge trades the code for the person's tokens.
  await first.finishAuth(code!);
  await client.connect(new StreamableHTTPClientTransport(endpoint, { authProvider: signIn }));
  try {
    // The person's own token: a read runs as alice.
    const read = await client.callTool({ name: 'read_text_file', arguments: { path: path.join(root, 'motd.txt') } });
    expect(read.isError).toBeFalsy();
    expect(textOf(read)).toContain('served by the npm filesystem server');

    // A write is held; the client is handed the approval page to show its person.
    const target = path.join(root, `signed-in-${Date.now().toString(36)}.txt`);
    const pending = client.callTool(
      { name: 'write_file', arguments: { path: target, content: 'never written\n' } },
      undefined,
      { timeout: 80_000 },
    );
    await expect.poll(() => links.length, { timeout: 15_000 }).toBe(1);
    const link = links[0];
    expect(link.message).toContain('write_file');
    expect(link.message).toContain('2 people');
    const jobId = link.url.match(/\/approvals\/([^\s/?#]+)$/)![1];
    expect(new URL(link.url).origin).toBe(new URL(baseURL!).origin);

    // The request is alice's, not a service's: she sees it with her own token.
    const job = await request.get(`/api/v1/jobs/${jobId}`, {
      headers: { authorization: `Bearer ${signIn.tokens()!.access_token}` },
    });
    expect(await job.json()).toMatchObject({ job_id: jobId, status: 'queued', requester: 'alice' });
    expect(completed).toEqual([]);

    // Dave opens the link and denies; the waiting call ends with his reason, and the client
    // is told the linked interaction is over.
    const reviewer = await browser.newContext();
    const reviewPage = await reviewer.newPage();
    await new Portal(reviewPage).signInWithProvider('dave', new URL(link.url).pathname);
    await expect(reviewPage.locator('main')).toContainText('alice');
    await new ApprovalDetailPage(reviewPage).deny('write it from the change ticket instead');
    await snap(reviewPage, testInfo, 'dave-denied-signed-in-write');
    await reviewer.close();

    const denied = await pending;
    expect(denied.isError).toBe(true);
    expect(textOf(denied)).toContain('write it from the change ticket instead');
    await expect.poll(() => completed, { timeout: 10_000 }).toEqual([link.elicitationId]);
    expect(fs.existsSync(target)).toBe(false);
  } finally {
    await client.close();
  }
});

/** `countersign mcp` over stdio, as a desktop client starts it: the server's settings (same
 * database and policy), IT-MCP's client token, acting for `person`. */
async function connectStdio(person: string, holdSecs: number) {
  const serverEnv = JSON.parse(process.env.E2E_SERVER_ENV ?? '{}') as Record<string, string>;
  const binary = process.env.E2E_BINARY_PATH;
  if (!binary || !serverEnv.COUNTERSIGN_DATABASE_URL) throw new Error('playwright.config.ts sets E2E_SERVER_ENV and E2E_BINARY_PATH');
  const transport = new StdioClientTransport({
    command: binary,
    args: ['mcp', '--upstream', 'files', '--on-behalf-of', person],
    env: {
      ...serverEnv,
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/tmp',
      COUNTERSIGN_LOG_LEVEL: 'warn',
      COUNTERSIGN_MCP_HOLD_SECS: String(holdSecs),
      COUNTERSIGN_MCP_TOKEN: await serviceToken(),
    },
    stderr: 'inherit',
  });
  const client = new Client({ name: 'countersign-e2e-desktop', version: '1.0.0' });
  await client.connect(transport);
  return client;
}

test('a desktop client starts the gateway over stdio for a person; a reviewer denies the held write and the waiting call says why', async ({ browser, request }, testInfo) => {
  test.setTimeout(90_000);
  const root = filesRoot();
  const client = await connectStdio('carol', 60);
  try {
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name)).toEqual(expect.arrayContaining(['read_text_file', 'write_file']));
    const read = await client.callTool({ name: 'read_text_file', arguments: { path: path.join(root, 'motd.txt') } });
    expect(read.isError).toBeFalsy();
    expect(textOf(read)).toContain('served by the npm filesystem server');

    const target = path.join(root, `stdio-${Date.now().toString(36)}.txt`);
    const progress: string[] = [];
    const pending = client.callTool(
      { name: 'write_file', arguments: { path: target, content: 'never written\n' } },
      undefined,
      { onprogress: (p) => progress.push(p.message ?? ''), timeout: 80_000, resetTimeoutOnProgress: true },
    );
    await expect.poll(() => progress.find((m) => m.includes('/approvals/')), { timeout: 15_000 }).toBeTruthy();
    const jobId = progress.find((m) => m.includes('/approvals/'))!.match(/\/approvals\/([^\s/]+)/)![1];

    // The request is the person's, made through IT-MCP's client.
    const job = await request.get(`/api/v1/jobs/${jobId}`, {
      headers: { authorization: `Bearer ${await serviceToken()}` },
    });
    expect(await job.json()).toMatchObject({ job_id: jobId, status: 'queued', requester: 'carol' });

    const context = await browser.newContext();
    const page = await context.newPage();
    await new Portal(page).signInWithProvider('dave', `/approvals/${jobId}`);
    await expect(page.locator('main')).toContainText('carol');
    await new ApprovalDetailPage(page).deny('not from a desktop session');
    await snap(page, testInfo, 'dave-denied-stdio-write');
    await context.close();

    const denied = await pending;
    expect(denied.isError).toBe(true);
    expect(textOf(denied)).toContain('not from a desktop session');
    expect(fs.existsSync(target)).toBe(false);
  } finally {
    await client.close();
  }
});

test('the MCP Inspector CLI lists and calls tools through /mcp with a bearer token', async ({ baseURL }) => {
  const root = filesRoot();
  const inspector = path.join(__dirname, '..', 'node_modules', '.bin', 'mcp-inspector');
  const run = async (...args: string[]) => {
    const { stdout } = await promisify(execFile)(
      inspector,
      ['--cli', new URL('/mcp', baseURL).toString(), '--transport', 'http', '--header', `Authorization: Bearer ${await serviceToken()}`, ...args],
      { timeout: 30_000 },
    );
    return JSON.parse(stdout.slice(stdout.indexOf('{'))) as { tools?: { name: string; description?: string }[]; content?: Content; isError?: boolean };
  };
  const listed = await run('--method', 'tools/list');
  const names = (listed.tools ?? []).map((t) => t.name);
  expect(names).toEqual(expect.arrayContaining(['read_text_file', 'write_file']));
  expect(names).not.toContain('move_file');
  const read = await run('--method', 'tools/call', '--tool-name', 'read_text_file', '--tool-arg', `path=${path.join(root, 'motd.txt')}`);
  expect(read.isError).toBeFalsy();
  expect(textOf(read)).toContain('served by the npm filesystem server');
  // A tool the policy does not map is not on the server as the Inspector sees it: it refuses
  // to call it, and the file stays.
  const moved = await run(
    '--method', 'tools/call', '--tool-name', 'move_file',
    '--tool-arg', `source=${path.join(root, 'motd.txt')}`, '--tool-arg', `destination=${path.join(root, 'x.txt')}`,
  ).then(
    () => 'called',
    (error: { stdout?: string; stderr?: string; message: string }) =>
      `${error.stdout ?? ''}${error.stderr ?? ''}${error.message}`,
  );
  expect(moved).toContain('tool_not_found');
  expect(fs.existsSync(path.join(root, 'motd.txt'))).toBe(true);
});

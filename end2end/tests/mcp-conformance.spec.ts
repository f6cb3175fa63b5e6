import { test, expect } from '@playwright/test';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { serviceToken } from './pages/realm';

// The official MCP conformance suite (`@modelcontextprotocol/conformance`) against Countersign's
// `/mcp`, with the npm filesystem server behind it. The suite's client sends no credentials, so
// it talks to a pass-through on 127.0.0.1 that adds IT-MCP's bearer token and changes nothing
// else (the Host and Origin headers go on as the suite sent them, so the DNS-rebinding checks
// reach the gateway itself).
//
// The scenarios are the suite's checks of what a gateway itself answers: the handshake, ping,
// tools/list, and refusing other hosts and origins. The others call tools of the suite's own
// reference server (`test_simple_text`, `test_image_content`, ...), which is not published on npm.
const SCENARIOS = ['server-initialize', 'ping', 'tools-list', 'dns-rebinding-protection'];

const suite = path.join(__dirname, '..', 'node_modules', '@modelcontextprotocol', 'conformance', 'dist', 'index.js');
const register = path.join(__dirname, '..', 'conformance', 'register.mjs');

/** A pass-through to `target` that adds `authorization` (closed by the returned function). */
async function withToken(target: URL, authorization: string) {
  const proxy = http.createServer((request, response) => {
    const forwarded = http.request(
      {
        host: target.hostname,
        port: target.port,
        method: request.method,
        path: request.url,
        headers: { ...request.headers, authorization },
      },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      },
    );
    forwarded.on('error', () => {
      response.writeHead(502);
      response.end();
    });
    request.pipe(forwarded);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const { port } = proxy.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/mcp`, close: () => new Promise((resolve) => proxy.close(resolve)) };
}

test('the MCP conformance suite passes its gateway scenarios against /mcp', async ({ baseURL }) => {
  test.setTimeout(120_000);
  const proxy = await withToken(new URL(baseURL!), `Bearer ${await serviceToken()}`);
  try {
    for (const scenario of SCENARIOS) {
      const outcome = await promisify(execFile)(
        process.execPath,
        ['--import', register, suite, 'server', '--url', proxy.url, '--scenario', scenario],
        { timeout: 60_000 },
      ).then(
        ({ stdout }) => ({ passed: true, output: stdout }),
        (error: { stdout?: string; stderr?: string; message: string }) => ({
          passed: false,
          output: `${error.stdout ?? ''}\n${error.stderr ?? error.message}`,
        }),
      );
      const output = outcome.output.replace(/\u001b\[[0-9;]*m/g, '');
      expect(outcome.passed, `${scenario}:\n${output}`).toBe(true);
      expect(output, scenario).toMatch(/Passed: (\d+)\/\1, 0 failed/);
    }
  } finally {
    await proxy.close();
  }
});

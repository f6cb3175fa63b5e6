import { test, expect } from '@playwright/test';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Portal } from './pages/portal';
import { ReportsPage } from './pages/reports';
import { ItMcp } from './pages/itmcp';
import { snap } from './pages/evidence';

// Journey 6: bob (auditor) previews a period and downloads a signed evidence bundle that
// `countersign audit verify-export` verifies offline with the served public key (and rejects
// once a file in it is changed); the PDF summary downloads too. A viewer cannot export.

const binary = process.env.E2E_BINARY ?? path.resolve(__dirname, '..', '..', 'target', 'release', 'countersign');

test('bob exports an evidence bundle that verifies offline, and a tampered copy does not', async ({ page, request }, testInfo) => {
  test.setTimeout(60_000);
  const itMcp = await ItMcp.connect(request);
  await itMcp.decide({ tool: 'ssh-exec', operation: 'executeCommand', args: { command: 'uptime' }, target: 'web-1' });
  await itMcp.decide({ tool: 'system-overview', operation: 'getOverview' });

  const portal = new Portal(page);
  await portal.signInWithProvider('bob', '/reports');
  const reports = new ReportsPage(page);
  const today = new Date().toISOString().slice(0, 10);
  await reports.preview({ from: today, to: today, framework: 'soc2' });
  await expect(page).toHaveURL(/framework=soc2/);
  await expect(reports.total).toHaveText(/^[1-9]\d*$/);
  await portal.hydrated();
  await snap(page, testInfo, '1-preview');

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'countersign-export-'));
  const bundle = path.join(dir, 'evidence.tar');
  const name = await reports.download('bundle', bundle);
  expect(name).toMatch(/^countersign-audit-\d{8}-\d{8}\.tar$/);
  // Once hydrated, the page follows the download to its end.
  await expect(page.getByTestId('export-progress')).toContainText(/Done: \d+ rows read/);

  // The assessor's side: the public key the server publishes, and the CLI, offline.
  const key = await (await request.get('/api/v1/audit/public-key')).json();
  expect(key.algorithm).toBe('Ed25519');
  const keyFile = path.join(dir, 'public-key.json');
  fs.writeFileSync(keyFile, JSON.stringify(key));
  const out = execFileSync(binary, ['audit', 'verify-export', bundle, '--public-key', keyFile], { encoding: 'utf8' });
  // summary.pdf, events.csv, events.jsonl, chain.jsonl and policies.jsonl (the rows' policies).
  expect(out).toMatch(/^ok: signature, 5 file hashes and the chain segment verify/);
  expect(out).toContain('by bob');

  // Change one byte of the CSV inside the archive: verification fails and names the file.
  const tar = fs.readFileSync(bundle);
  // The policy the decisions were made under travels with them, text and all.
  expect(tar.indexOf(Buffer.from('{"policy_hash":'))).toBeGreaterThan(0);
  expect(tar.indexOf(Buffer.from('approver_role'))).toBeGreaterThan(0);
  const at = tar.indexOf(Buffer.from('seq,id,timestamp'));
  expect(at).toBeGreaterThan(0);
  tar[at + 200] = tar[at + 200] === 0x41 ? 0x42 : 0x41;
  const tampered = path.join(dir, 'tampered.tar');
  fs.writeFileSync(tampered, tar);
  const failed = spawnSync(binary, ['audit', 'verify-export', tampered, '--public-key', keyFile], { encoding: 'utf8' });
  expect(failed.status).toBe(1);
  expect(failed.stdout).toContain('FAILED: events.csv');

  // The PDF summary is a PDF.
  const pdf = path.join(dir, 'summary.pdf');
  await reports.download('pdf', pdf);
  expect(fs.readFileSync(pdf).subarray(0, 5).toString()).toBe('%PDF-');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a viewer sees no exports and the server refuses them', async ({ page }, testInfo) => {
  await new Portal(page).signInWithProvider('carol', '/reports');
  const reports = new ReportsPage(page);
  await expect(reports.error).toContainText('auditors and admins');
  await expect(reports.link('csv')).toHaveCount(0);
  await snap(page, testInfo, '2-viewer');
  // Asking anyway (same session cookie) is refused, and nothing is downloaded.
  const response = await page.request.get('/reports/export?format=csv');
  expect(response.status()).toBe(403);
  expect((await response.json()).error).toBe('forbidden');
});

import { type Locator, type Page } from '@playwright/test';
import type { ToolCall } from './itmcp';

/** `/policies`: the active policy and the in-browser simulator. */
export class SimulatorPage {
  readonly action: Locator;
  readonly risk: Locator;
  readonly callHash: Locator;
  readonly policyHash: Locator;
  readonly patterns: Locator;
  readonly activePolicyHash: Locator;
  /** "What it does": one row per command the arguments would run. */
  readonly commands: Locator;

  constructor(readonly page: Page) {
    this.action = page.getByTestId('sim-action');
    this.risk = page.getByTestId('sim-risk');
    this.callHash = page.getByTestId('sim-call-hash');
    this.policyHash = page.getByTestId('sim-policy-hash');
    this.patterns = page.getByTestId('sim-patterns');
    this.activePolicyHash = page.getByTestId('policy-hash');
    this.commands = page.getByTestId('sim-commands').locator('li.command');
  }

  async open() {
    await this.page.goto('/policies');
  }

  async simulate(call: ToolCall, capabilities: string[]) {
    await this.page.getByLabel('Tool').fill(call.tool);
    await this.page.getByLabel('Operation').fill(call.operation);
    await this.page.getByLabel('Target').fill(call.target ?? '');
    await this.page.getByLabel("Caller's capabilities (comma-separated)").fill(capabilities.join(', '));
    await this.page.getByLabel('Arguments (JSON object)').fill(JSON.stringify(call.args ?? {}));
    await this.page.getByTestId('simulate').click();
    await this.page.getByTestId('sim-result').waitFor();
  }
}

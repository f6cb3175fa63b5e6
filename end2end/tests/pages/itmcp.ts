import { expect, type APIRequestContext } from '@playwright/test';
import { serviceToken } from './realm';

/** A tool call as IT-MCP sends it to `POST /api/v1/decisions`. */
export interface ToolCall {
  tool: string;
  operation: string;
  args?: Record<string, unknown>;
  target?: string;
  reason?: string;
  on_behalf_of?: string;
}

/** IT-MCP's side of the API: a client-credentials token from the realm, decisions and jobs. */
export class ItMcp {
  private constructor(
    private readonly request: APIRequestContext,
    readonly token: string,
  ) {}

  static async connect(request: APIRequestContext): Promise<ItMcp> {
    return new ItMcp(request, await serviceToken());
  }

  private get headers() {
    return { authorization: `Bearer ${this.token}` };
  }

  /** Ask for a decision; the answer's JSON. */
  async decide(call: ToolCall) {
    const answer = await this.request.post('/api/v1/decisions', { headers: this.headers, data: call });
    expect(answer.status(), await answer.text()).toBe(200);
    return answer.json();
  }

  /** Ask for a call that must wait for people; the queued job's id. */
  async askForApproval(call: ToolCall): Promise<string> {
    const answer = await this.decide(call);
    expect(answer.action).toBe('require_approval');
    expect(answer.job_id).toBeTruthy();
    return answer.job_id as string;
  }

  async job(jobId: string, waitSecs = 0) {
    const url = waitSecs > 0 ? `/api/v1/jobs/${jobId}?wait=${waitSecs}` : `/api/v1/jobs/${jobId}`;
    const response = await this.request.get(url, { headers: this.headers, timeout: (waitSecs + 10) * 1000 });
    expect(response.status()).toBe(200);
    return response.json();
  }

  /**
   * Long-poll the job the way IT-MCP waits for a person: each call returns when the status
   * changes (or after `wait`); repeat until the job is final. Returns every status seen.
   */
  async followUntilFinal(jobId: string, deadlineMs = 60_000) {
    const seen: string[] = [];
    const deadline = Date.now() + deadlineMs;
    let job = await this.job(jobId);
    seen.push(job.status);
    while (!job.final && Date.now() < deadline) {
      job = await this.job(jobId, 20);
      if (seen[seen.length - 1] !== job.status) seen.push(job.status);
    }
    return { job, seen };
  }
}

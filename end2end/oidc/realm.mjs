// A real, certified OpenID provider (the npm package `oidc-provider`) dressed as a Keycloak
// realm, for the end-to-end tests: issuer http://127.0.0.1:PORT/realms/countersign, Keycloak's
// endpoint paths, its login form (#username, #password, #kc-login), `realm_access.roles` and
// `preferred_username` in the tokens, JWT access tokens signed by the realm's key.
//
//   node oidc/realm.mjs            (port from E2E_OIDC_PORT, portal from E2E_PORTAL_URL)
//
// Users and clients are in ./realm.json, shared with the tests. Nothing here is persisted: keys,
// sessions and grants live in memory and change at every start, as a restarted realm's would.

import http from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';
import { readFileSync } from 'node:fs';

const data = JSON.parse(readFileSync(new URL('./realm.json', import.meta.url), 'utf8'));
const { realm: REALM, users: USERS, clients: CLIENTS, assistant: ASSISTANT, apiResource: API_RESOURCE, apiAudience: API_AUDIENCE, serviceRoles: SERVICE_ROLES } = data;
/** Test-only passwords: `<user>-e2e-password`. */
const passwordOf = (user) => `${user}-e2e-password`;

const port = Number(process.env.E2E_OIDC_PORT ?? 3950);
const portal = process.env.E2E_PORTAL_URL ?? 'http://127.0.0.1:3900';
const prefix = `/realms/${REALM}`;
const issuer = `http://127.0.0.1:${port}${prefix}`;

// The realm's signing key: RS256, fresh at every start (tests must cope with rotation).
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `rs256-${randomBytes(4).toString('hex')}`, alg: 'RS256', use: 'sig' };

const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title><link rel="icon" href="data:,"></head>
<body><div id="kc-content"><h1 id="kc-page-title">${escape(title)}</h1>${body}</div></body></html>`;
}

function loginForm(uid, error) {
  const alert = error ? `<div class="alert-error" role="alert" id="input-error">${escape(error)}</div>` : '';
  return page('Sign in to your account', `${alert}
<form id="kc-form-login" method="post" action="${prefix}/login-actions/${escape(uid)}">
  <label for="username">Username or email</label><input id="username" name="username" type="text" autofocus autocomplete="username">
  <label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password">
  <input type="submit" id="kc-login" name="login" value="Sign In">
</form>`);
}

function accountClaims(id) {
  const user = USERS[id];
  return {
    sub: id,
    preferred_username: id,
    name: user.name,
    email: `${id}@example.test`,
    email_verified: true,
    realm_access: { roles: [...user.roles, `default-roles-${REALM}`, 'offline_access', 'uma_authorization'] },
  };
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: CLIENTS.portal.id,
      client_secret: CLIENTS.portal.secret,
      redirect_uris: [`${portal}/auth/callback`],
      post_logout_redirect_uris: [`${portal}/sign-in?signed_out=1`],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: CLIENTS.itMcp.id,
      client_secret: CLIENTS.itMcp.secret,
      redirect_uris: [],
      response_types: [],
      grant_types: ['client_credentials'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    // An MCP client (an assistant's app) signing its person in, as the MCP authorization spec
    // describes: a public client with PKCE and a loopback redirect.
    {
      client_id: ASSISTANT.id,
      redirect_uris: [ASSISTANT.redirect],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  async findAccount(ctx, id) {
        if (!Object.hasOwn(USERS, id)) return undefined;
    return { accountId: id, claims: async () => accountClaims(id) };
  },
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name', 'realm_access'],
    email: ['email', 'email_verified'],
  },
  // Keycloak puts profile claims in the ID token; oidc-provider's conforming mode would not.
  conformIdTokenClaims: false,
  pkce: { methods: ['S256'], required: () => true },
  routes: {
    authorization: '/protocol/openid-connect/auth',
    token: '/protocol/openid-connect/token',
    userinfo: '/protocol/openid-connect/userinfo',
    jwks: '/protocol/openid-connect/certs',
    end_session: '/protocol/openid-connect/logout',
    revocation: '/protocol/openid-connect/revoke',
    introspection: '/protocol/openid-connect/token/introspect',
  },
  interactions: { url: (ctx, interaction) => `${prefix}/login-actions/${interaction.uid}` },
  ttl: { AccessToken: 300, ClientCredentials: 300, IdToken: 300, AuthorizationCode: 60, Interaction: 600, Session: 3600, Grant: 3600 },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // Keycloak ends the session without asking when the request carries an ID token hint;
      // this page submits the provider's confirmation form by itself, with a button as fallback.
      async logoutSource(ctx, form) {
        ctx.body = page('Signing out', `${form.replace('</form>', '<input type="hidden" name="logout" value="yes"></form>')}
<button id="kc-logout" type="submit" form="op.logoutForm">Sign out</button>
<script>document.getElementById('op.logoutForm').submit();</script>`);
      },
    },
    // JWT access tokens for Countersign (audience `countersign`), as Keycloak issues with an
    // audience mapper.
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => API_RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async () => ({
        scope: 'api',
        audience: API_AUDIENCE,
        accessTokenFormat: 'jwt',
        accessTokenTTL: 300,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  // Keycloak's claims in access tokens: realm roles, user name, authorized party.
  async extraTokenClaims(ctx, token) {
        if (token.accountId && Object.hasOwn(USERS, token.accountId)) {
      const { preferred_username, name, realm_access } = accountClaims(token.accountId);
      return { preferred_username, name, realm_access, azp: token.clientId };
    }
    if (token.clientId === CLIENTS.itMcp.id) {
      return {
        preferred_username: `service-account-${token.clientId}`,
        azp: token.clientId,
        realm_access: { roles: [...SERVICE_ROLES, `default-roles-${REALM}`] },
      };
    }
    return undefined;
  },
});
provider.proxy = false;

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 16 * 1024) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function loginActions(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const send = (status, html) => {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(html);
  };
  if (req.method === 'GET') return send(200, loginForm(uid));
  const form = await readForm(req);
  const username = (form.get('username') ?? '').trim().toLowerCase();
    if (!Object.hasOwn(USERS, username) || form.get('password') !== passwordOf(username)) {
    return send(200, loginForm(uid, 'Invalid username or password.'));
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: username, clientId: details.params.client_id });
  grant.addOIDCScope('openid profile email');
  grant.addResourceScope(API_RESOURCE, 'api');
  // An MCP client names the server it wants a token for (RFC 8707 `resource`): the token is
  // Countersign's (audience `countersign`), as Keycloak's audience mapper would make it.
  const resource = details.params.resource;
  if (typeof resource === 'string' && resource !== API_RESOURCE) grant.addResourceScope(resource, 'api');
  const grantId = await grant.save();
  await provider.interactionFinished(
    req,
    res,
    { login: { accountId: username }, consent: { grantId } },
    { mergeWithLastSubmission: false },
  );
}

const callback = provider.callback();
const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    const actions = url.pathname.match(/^\/realms\/[^/]+\/login-actions\/([A-Za-z0-9_-]+)$/);
    if (actions && url.pathname.startsWith(`${prefix}/`)) {
      await loginActions(req, res, actions[1]);
      return;
    }
    if (url.pathname === prefix || url.pathname.startsWith(`${prefix}/`)) {
      req.originalUrl = req.url;
      req.url = req.url.slice(prefix.length) || '/';
      callback(req, res);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  } catch (error) {
    console.error('[oidc] request failed:', error?.message ?? error);
    if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
    res.end('bad request');
  }
});

server.listen(port, '127.0.0.1', () => {
  console.log(`[oidc] realm ${REALM} at ${issuer} (portal ${portal})`);
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => server.close(() => process.exit(0)));

// The portal end to end, in headless Chromium against `capstan serve --sim`: what a member,
// a tenant admin and an admin see and do through the pages, checked against the API and the
// simulator's own state (its console and its apiserver), never only against the page.
// Started by tests/portal/run; each scenario is a story a user would recognise.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const OUT = process.env.PORTAL_OUT || join(tmpdir(), 'capstan-portal-test');
const BIN = process.env.CAPSTAN_BIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = join(OUT, 'screenshots');
mkdirSync(SHOTS, { recursive: true });

const ADMIN = 'portal-admin-token-0001';
const ALICE = 'alice-token-0001';
const BOB = 'bob-token-00001';
const DANA = 'dana-token-0001';
const EVE = 'eve-token-00001';
// Two tenants as tests/common/fixtures.rs has them.
const CONFIG = `tenants:
  demo: {namespaces: [default]}
  acme: {namespaces: [acme]}
tokens:
  - {name: alice, role: member, tenant: demo, token: ${ALICE}}
  - {name: bob, role: member, tenant: demo, token: ${BOB}}
  - {name: dana, role: tenant_admin, tenant: demo, token: ${DANA}}
  - {name: eve, role: member, tenant: acme, token: ${EVE}}
`;

// ---- the server --------------------------------------------------------------------------

/** `capstan serve --sim` (50 simulated seconds a second) on a free port with a temp DB. */
async function startServer() {
  const dir = mkdtempSync(join(tmpdir(), 'capstan-portal-'));
  writeFileSync(join(dir, 'capstan.yaml'), CONFIG);
  const log = join(OUT, 'serve.log');
  const child = spawn(BIN, ['serve', '--sim', '--time-scale', '50', '--listen', '127.0.0.1:0',
    '--db', join(dir, 'capstan.db'), '--config', join(dir, 'capstan.yaml'),
    '--state-dir', join(dir, 'sim'), '--schedule-min-interval', '2s'], {
    env: { ...process.env, CAPSTAN_ADMIN_TOKEN: ADMIN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let errors = '';
  child.stderr.on('data', (d) => { errors += d; writeFileSync(log, errors); });
  const found = {};
  await new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${errors}`)), 60000);
    child.on('exit', (code) => reject(new Error(`serve exited ${code}: ${errors}`)));
    child.stdout.on('data', (d) => {
      buf += d;
      const sim = buf.match(/capstan: simulated cloud on (http:\/\/\S+)/);
      const url = buf.match(/capstan: listening on (http:\/\/\S+)/);
      if (sim) found.sim = sim[1];
      if (url) {
        found.url = url[1];
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const kubeconfig = readFileSync(join(dir, 'sim', 'kubeconfig'), 'utf8');
  found.kubeToken = kubeconfig.match(/token: (\S+)/)[1];
  found.child = child;
  return found;
}

const srv = await startServer();
const BASE = srv.url;

async function call(method, path, token, body) {
  const r = await fetch(`${BASE}${path}`, {
    method, headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, data: text ? JSON.parse(text) : null };
}

/** The simulator's ground truth (its console). */
async function simState() {
  return (await fetch(`${srv.sim}/sim/v1/state?project=demo`)).json();
}

async function console_(method, path, body) {
  const r = await fetch(`${srv.sim}/sim/v1/${path}`, {
    method, headers: { 'Content-Type': 'application/json' }, body: body && JSON.stringify(body),
  });
  assert.ok(r.ok, `console ${method} ${path}: ${r.status}`);
  return r.status === 204 ? null : r.json();
}

/** The simulator's apiserver, as kubectl would ask it. */
async function kube(path) {
  const r = await fetch(`${srv.sim}${path}`, { headers: { Authorization: `Bearer ${srv.kubeToken}` } });
  assert.equal(r.status, 200, `GET ${path}`);
  return r.json();
}

// ---- the browser -------------------------------------------------------------------------

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });

async function signIn(token) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  await page.goto(`${BASE}/ui/`);
  assert.match(page.url(), /\/ui\/login$/, 'signed out: sent to sign-in');
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(/\/ui\/$/);
  await ready(page);
  const cookies = await context.cookies();
  const c = cookies.find((x) => x.name === 'capstan_session');
  assert.ok(c && c.httpOnly && c.sameSite === 'Strict', `session cookie: ${JSON.stringify(cookies)}`);
  return page;
}

async function ready(page) {
  await page.waitForSelector('body[data-ready=true]');
}

async function go(page, path) {
  await page.goto(`${BASE}${path}`);
  await ready(page);
}

/** The page at 1280 px and at 390 px (a phone). */
async function shoot(page, name) {
  const was = page.viewportSize();
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: width === 390 ? 844 : 900 });
    await page.screenshot({ path: join(SHOTS, `${name}-${width}.png`), fullPage: true });
  }
  await page.setViewportSize(was);
}

async function workerNames(page, cluster) {
  const section = page.locator('section.cluster', { has: page.getByRole('heading', { name: cluster, exact: true }) });
  return section.locator('table.workers tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.machine));
}

async function waitJobState(page, state, timeout = 60000) {
  await page.locator('#job-state').getByText(state, { exact: true }).waitFor({ timeout });
}

// ---- the scenarios -----------------------------------------------------------------------

const results = [];
async function scenario(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push([name, 'ok']);
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    results.push([name, 'FAILED']);
    console.log(`FAIL ${name}\n${e.stack}`);
  }
}

let aliceJob;
const picked = {};

await scenario('a member signs in, sees default/demo with its workers and quota, and nothing of acme', async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const login = await ctx.newPage();
  await login.goto(`${BASE}/ui/login`);
  await shoot(login, 'sign-in');
  await ctx.close();
  const page = await signIn(ALICE);
  await page.getByRole('heading', { name: 'default/demo', exact: true }).waitFor();
  assert.equal(await page.getByRole('heading', { name: 'acme/prod' }).count(), 0);
  assert.match(await page.locator('#who').innerText(), /alice · member of demo/);
  const names = await workerNames(page, 'default/demo');
  assert.equal(names.length, 3, `three MachineSet workers: ${names}`);
  assert.ok(names.every((n) => n.startsWith('demo-md-0-')), `${names}`);
  const meters = page.locator('section.cluster meter');
  assert.ok(await meters.count() >= 5, 'quota bars for instances, cores, RAM, volumes, gigabytes…');
  const instances = page.locator('.quota-item', { hasText: 'instances' });
  assert.match(await instances.innerText(), /3 of 50 used/);
  await shoot(page, 'clusters');
  await page.context().close();
});

await scenario('a member adds two workers through the form (one pinned to a host with a floating IP) and watches the job succeed live', async () => {
  const page = await signIn(ALICE);
  await page.getByRole('link', { name: 'Add workers to default/demo' }).click();
  await ready(page);
  const rows = page.locator('fieldset.node-row');
  await rows.nth(0).getByLabel('Name').fill('portal-w-1');
  await rows.nth(0).getByLabel('Availability zone').selectOption('az2');
  await rows.nth(0).getByLabel('Compute host').selectOption('compute-3');
  const fipOptions = await rows.nth(0).getByLabel('Floating IP').locator('option').evaluateAll((o) => o.map((x) => x.value));
  picked.fip = fipOptions.find((v) => /^\d+\./.test(v));
  assert.ok(picked.fip, `a free address offered: ${fipOptions}`);
  await rows.nth(0).getByLabel('Floating IP').selectOption(picked.fip);
  await rows.nth(0).getByLabel('Roles').fill('ingress');
  await rows.nth(0).getByLabel('Labels').fill('team=edge');
  await rows.nth(0).getByLabel('Taints').fill('dedicated=edge:NoSchedule');
  await page.getByRole('button', { name: 'Add a node' }).click();
  await rows.nth(1).getByLabel('Name').fill('portal-w-2');
  await rows.nth(1).getByLabel('Data volume size (GiB)').fill('10');
  await rows.nth(1).getByLabel('Data volume type').fill('hdd');
  await page.getByText("The project's quota has room for these nodes.").waitFor();
  await shoot(page, 'add-workers');
  await page.getByRole('button', { name: 'Add these workers' }).click();
  await page.waitForURL(/\/ui\/jobs\/[0-9a-f-]+$/);
  await ready(page);
  aliceJob = page.url().split('/').pop();
  // From here on the page is never reloaded: a marker on the window survives only if so.
  await page.evaluate(() => { window.__stayed = true; });
  await waitJobState(page, 'succeeded');
  assert.equal(await page.evaluate(() => window.__stayed), true, 'no reload');
  for (const n of ['portal-w-1', 'portal-w-2']) {
    await page.locator(`tr[data-node="${n}"]`).getByText('succeeded').waitFor();
  }
  assert.ok(await page.locator('table.history tbody tr').count() > 4, 'the history streamed in');
  await shoot(page, 'job');
  await go(page, '/ui/clusters');
  const names = await workerNames(page, 'default/demo');
  assert.ok(names.includes('portal-w-1') && names.includes('portal-w-2'), `${names}`);
  const row = page.locator('tr[data-machine="portal-w-1"]');
  const text = await row.innerText();
  assert.match(text, /az2 \/ compute-3/);
  assert.ok(text.includes(picked.fip), `${text}`);
  assert.match(text, /role ingress/);
  assert.match(text, /team=edge/);
  assert.match(text, /taint dedicated=edge:NoSchedule/);
  assert.ok((await page.locator('tr[data-machine="portal-w-2"]').innerText()).includes('hdd'));
  await shoot(page, 'clusters-after-add');
  // The cloud agrees: the server is on compute-3 and holds the address.
  const s = await simState();
  const server = s.servers.find((x) => x.name === 'portal-w-1');
  assert.equal(server.host, 'compute-3', JSON.stringify(server));
  assert.ok(s.floating_ips.some((f) => f.floating_ip_address === picked.fip && f.port_id), 'floating IP attached');
  await page.context().close();
});

await scenario('a bad volume type shows preflight\'s message next to that field and creates nothing', async () => {
  const page = await signIn(ALICE);
  await go(page, '/ui/clusters/default/demo/add');
  const before = (await call('GET', '/v1/jobs', ADMIN)).data.jobs.length;
  const servers = (await simState()).servers.length;
  const row = page.locator('fieldset.node-row').nth(0);
  await row.getByLabel('Name').fill('portal-w-3');
  await row.getByLabel('Data volume size (GiB)').fill('10');
  await row.getByLabel('Data volume type').fill('nvme-gold');
  await page.getByRole('button', { name: 'Add these workers' }).click();
  const err = row.locator('.field-error[data-for="nodes[0].data_volumes[0].type"]');
  await err.waitFor();
  assert.match(await err.innerText(), /nvme-gold/);
  const input = row.getByLabel('Data volume type');
  assert.equal(await input.getAttribute('aria-invalid'), 'true');
  const described = await input.getAttribute('aria-describedby');
  assert.ok(described.includes(await err.getAttribute('id')), 'the message describes the field');
  assert.match(page.url(), /\/add$/, 'still on the form');
  await shoot(page, 'add-workers-refused');
  assert.equal((await call('GET', '/v1/jobs', ADMIN)).data.jobs.length, before, 'no job stored');
  assert.equal((await simState()).servers.length, servers, 'no server made');
  await page.context().close();
});

await scenario('a volume type removed after submit: needs_input, the amend form, resume, success', async () => {
  const page = await signIn(ALICE);
  await go(page, '/ui/clusters/default/demo/add');
  // Held at the quota wait until the type is gone, so CAPO meets its absence.
  const used = (await simState()).servers.length;
  await console_('PUT', 'quotas/demo', { instances: used });
  const row = page.locator('fieldset.node-row').nth(0);
  await row.getByLabel('Name').fill('portal-w-4');
  await page.getByLabel('Root volume type').fill('ssd');
  await page.getByRole('button', { name: 'Add these workers' }).click();
  await page.waitForURL(/\/ui\/jobs\/[0-9a-f-]+$/);
  await ready(page);
  const id = page.url().split('/').pop();
  await page.evaluate(() => { window.__stayed = true; });
  await page.locator('table.history tbody tr', { hasText: 'waiting' }).first().waitFor();
  // Meanwhile the quota shows what the held node will take, and the form says it is short.
  const other = await page.context().newPage();
  await other.goto(`${BASE}/ui/clusters`);
  await ready(other);
  const instances = other.locator('.quota-item', { hasText: 'instances' });
  assert.match(await instances.innerText(), new RegExp(`${used} of ${used} used, 1 more for jobs in flight`));
  await other.goto(`${BASE}/ui/clusters/default/demo/add`);
  await ready(other);
  await other.locator('fieldset.node-row').nth(0).getByLabel('Name').fill('portal-w-5');
  await other.getByText('instances: needs 1, 0 free').waitFor();
  await shoot(other, 'add-workers-quota-short');
  await other.close();
  const fault = await console_('POST', 'faults', { kind: 'volume_type_missing', name: 'ssd' });
  await console_('PUT', 'quotas/demo', { instances: used + 50 });
  const amend = page.getByRole('button', { name: 'Amend portal-w-4' });
  await amend.waitFor({ timeout: 60000 });
  await page.locator('#job-state').getByText('needs_input').waitFor();
  assert.ok(await page.locator('table.history tbody tr', { hasText: 'Volume type with name ssd could not be found' }).count() > 0,
    "the cloud's own text in the history");
  await console_('DELETE', `faults/${fault.id}`);
  await amend.click();
  const form = page.locator('form.amend');
  await form.getByLabel('Root volume type').fill('hdd');
  await shoot(page, 'job-needs-input');
  await form.getByRole('button', { name: 'Save portal-w-4' }).click();
  await form.getByText('portal-w-4 amended').waitFor();
  await page.getByRole('button', { name: 'Resume job' }).click();
  await waitJobState(page, 'succeeded');
  assert.equal(await page.evaluate(() => window.__stayed), true, 'no reload');
  const job = (await call('GET', `/v1/jobs/${id}`, ADMIN)).data;
  assert.equal(job.nodes[0].spec.root_volume.type, 'hdd');
  const root = (await simState()).volumes.find((v) => v.name === 'portal-w-4-root');
  assert.equal(root.volume_type, 'hdd');
  await page.context().close();
});

await scenario('a tenant admin sees every job of demo and none of acme; a member not another member\'s; an admin both', async () => {
  const bobJob = await call('POST', '/v1/jobs', BOB, { kind: 'smoke', cluster: 'default/demo', nodes: ['b'] });
  assert.equal(bobJob.status, 202, JSON.stringify(bobJob.data));
  const eveJob = await call('POST', '/v1/jobs', EVE, { kind: 'smoke', cluster: 'acme/prod', nodes: ['e'] });
  assert.equal(eveJob.status, 202, JSON.stringify(eveJob.data));
  const ids = async (page) => page.locator('tr[data-job]').evaluateAll((r) => r.map((x) => x.dataset.job));
  const dana = await signIn(DANA);
  await go(dana, '/ui/jobs');
  const seenByDana = await ids(dana);
  const demoJobs = (await call('GET', '/v1/jobs?tenant=demo&limit=500', ADMIN)).data.jobs.map((j) => j.id);
  assert.deepEqual([...seenByDana].sort(), [...demoJobs].sort(), 'every job of demo');
  assert.ok(seenByDana.includes(aliceJob) && seenByDana.includes(bobJob.data.id));
  assert.ok(!seenByDana.includes(eveJob.data.id), 'none of acme');
  await shoot(dana, 'jobs');
  // A filter narrows what the API narrows.
  await dana.getByLabel('Kind').selectOption('smoke');
  await dana.getByRole('button', { name: 'Filter' }).click();
  await ready(dana);
  assert.deepEqual(await ids(dana), [bobJob.data.id]);
  await dana.context().close();
  const alice = await signIn(ALICE);
  await go(alice, '/ui/jobs');
  const seenByAlice = await ids(alice);
  assert.ok(seenByAlice.includes(aliceJob));
  assert.ok(!seenByAlice.includes(bobJob.data.id), "not bob's job");
  await go(alice, `/ui/jobs/${bobJob.data.id}`);
  await alice.getByText(`job ${bobJob.data.id} not found`).waitFor();
  await alice.context().close();
  const admin = await signIn(ADMIN);
  await go(admin, '/ui/jobs');
  const seenByAdmin = await ids(admin);
  assert.ok(seenByAdmin.includes(bobJob.data.id) && seenByAdmin.includes(eveJob.data.id), 'both tenants');
  await go(admin, '/ui/clusters');
  await admin.getByRole('heading', { name: 'acme/prod', exact: true }).waitFor();
  await admin.context().close();
});

await scenario('removing a MachineSet worker from the page deletes exactly that one', async () => {
  const ns = '/apis/cluster.x-k8s.io/v1beta1/namespaces/default';
  const setMachines = async () => (await kube(`${ns}/machines`)).items
    .filter((m) => (m.metadata.labels || {})['cluster.x-k8s.io/set-name'] === 'demo-md-0' && !m.metadata.deletionTimestamp)
    .map((m) => m.metadata.name).sort();
  const before = await setMachines();
  assert.equal(before.length, 3, `${before}`);
  const victim = before[1];
  const page = await signIn(ALICE);
  await page.locator(`input[type=checkbox][data-machine="${victim}"]`).check();
  await page.getByRole('button', { name: 'Remove selected' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.waitFor();
  const lines = await dialog.locator('li').allInnerTexts();
  const going = lines.filter((l) => l.includes('is deleted'));
  assert.deepEqual(going, [`${victim} is deleted (Machine, server, ports, volumes, floating IP)`], `${lines}`);
  await shoot(page, 'remove-confirm');
  await dialog.getByRole('button', { name: 'Remove' }).click();
  await page.waitForURL(/\/ui\/jobs\/[0-9a-f-]+$/);
  await ready(page);
  await waitJobState(page, 'succeeded');
  // Checked through the simulator's apiserver, not the page.
  const after = await setMachines();
  assert.deepEqual(after, before.filter((m) => m !== victim));
  const set = await kube(`${ns}/machinesets/demo-md-0`);
  assert.equal(set.spec.replicas, 2);
  await page.context().close();
});

await scenario('repairing a healthy worker from the page leaves it alone; cancelling a held job from its page stops it', async () => {
  const before = (await simState()).servers.find((x) => x.name === 'portal-w-2');
  const page = await signIn(ALICE);
  await page.locator('input[type=checkbox][data-machine="portal-w-2"]').check();
  await page.getByRole('button', { name: 'Repair selected' }).click();
  const dialog = page.getByRole('dialog');
  assert.deepEqual(await dialog.locator('li').allInnerTexts(),
    ['portal-w-2 is deleted and made again with the same spec, if unhealthy']);
  await dialog.getByRole('button', { name: 'Repair' }).click();
  await page.waitForURL(/\/ui\/jobs\/[0-9a-f-]+$/);
  await ready(page);
  await waitJobState(page, 'succeeded');
  const after = (await simState()).servers.find((x) => x.name === 'portal-w-2');
  assert.equal(after.id, before.id, 'the same server: a healthy node is left alone');
  // A job held at the quota wait, cancelled from its page.
  const used = (await simState()).servers.length;
  await console_('PUT', 'quotas/demo', { instances: used });
  const held = await call('POST', '/v1/jobs', ALICE, {
    kind: 'scale_out', cluster: 'default/demo',
    defaults: { flavor: 'k8s.small', image: 'ubuntu-2204-kube-v1.30', network: 'demo-net', subnet: 'demo-subnet' },
    nodes: [{ name: 'portal-w-9' }],
  });
  assert.equal(held.status, 202, JSON.stringify(held.data));
  await go(page, `/ui/jobs/${held.data.id}`);
  await page.locator('table.history tbody tr', { hasText: 'waiting' }).first().waitFor();
  await page.getByRole('button', { name: 'Cancel job' }).click();
  await page.getByRole('dialog').getByRole('button', { name: 'Cancel job' }).click();
  await waitJobState(page, 'cancelled');
  await console_('PUT', 'quotas/demo', { instances: used + 50 });
  assert.equal((await simState()).servers.filter((x) => x.name === 'portal-w-9').length, 0, 'nothing made');
  await page.context().close();
});

await scenario('schedules: a tenant admin creates a repair sweep; a member does not see it', async () => {
  const dana = await signIn(DANA);
  await go(dana, '/ui/schedules');
  await dana.getByLabel('Name').fill('demo-nightly-repair');
  await dana.getByLabel('Cron').fill('0 3 * * *');
  await dana.getByRole('button', { name: 'Create schedule' }).click();
  await dana.locator('tr[data-schedule="demo-nightly-repair"]').waitFor();
  await ready(dana);
  await shoot(dana, 'schedules');
  // A refused cron shows next to the cron field.
  await dana.getByLabel('Name').fill('too-often');
  await dana.getByLabel('Cron').fill('* * * * * *');
  await dana.getByRole('button', { name: 'Create schedule' }).click();
  await dana.locator('.field-error[data-for="cron"]').waitFor();
  await dana.context().close();
  const alice = await signIn(ALICE);
  await go(alice, '/ui/schedules');
  assert.equal(await alice.locator('tr[data-schedule="demo-nightly-repair"]').count(), 0);
  // Sign-out ends the session: the pages and the API refuse the old cookie.
  await alice.getByRole('button', { name: 'Sign out' }).click();
  await alice.waitForURL(/\/ui\/login$/);
  const r = await alice.evaluate(async () => (await fetch('/v1/clusters')).status);
  assert.equal(r, 401);
  await alice.context().close();
});

await browser.close();
srv.child.kill('SIGKILL');
const failed = results.filter(([, r]) => r !== 'ok');
console.log(`portal: ${results.length - failed.length} passed, ${failed.length} failed; screenshots in ${SHOTS}`);
process.exit(failed.length ? 1 : 0);

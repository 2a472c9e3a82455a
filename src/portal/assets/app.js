// Capstan's portal: renders the page the path names from the public /v1 API, as the
// signed-in principal (the session cookie; writes carry the session's CSRF token). It
// decides nothing the API decides: what a list holds and what a write may do are the API's
// answers, shown as they come (a 422 next to the field it names).
'use strict';

const me = { name: '', role: '', tenant: null, csrf: '' };
const JOB_STATES = ['queued', 'running', 'needs_input', 'cancelling', 'succeeded', 'failed', 'cancelled'];
const JOB_KINDS = ['scale_out', 'delete_nodes', 'repair', 'repair_sweep', 'orphan_sweep', 'smoke'];
const EVENT_KINDS = ['submitted', 'transition', 'waiting', 'blocked', 'retry', 'failed', 'needs_input',
  'cleanup', 'note', 'operator', 'lease_takeover', 'job_state'];
const TERMINAL = ['succeeded', 'failed', 'cancelled'];

// ---- small helpers -------------------------------------------------------------------

/** An element with attributes (`on…` are listeners, `text` its text) and children. */
function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'for') e.htmlFor = v;
    else if (k === 'value') e.value = v;
    else if (k === 'checked') e.checked = !!v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const main = () => document.getElementById('main');
const enc = encodeURIComponent;
let uid = 0;
const nextId = (p) => `${p}-${++uid}`;

function announce(text) {
  const s = document.getElementById('status');
  if (s) s.textContent = text;
}

function when(t) {
  if (!t) return '—';
  const d = new Date(t);
  return isNaN(d) ? t : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return `k-${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

/** Calls the API; a 401 means the session ended: back to sign-in. */
async function api(method, path, body, headers) {
  const hs = Object.assign({ Accept: 'application/json' }, headers || {});
  if (method !== 'GET') hs['X-CSRF-Token'] = me.csrf;
  if (body !== undefined) hs['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method, headers: hs, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401) {
    location.assign('/ui/login');
    throw new Error('signed out');
  }
  const text = await r.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (_) { data = { error: text }; }
  }
  return { status: r.status, ok: r.ok, data };
}

function problem(res) {
  return (res.data && res.data.error) || `the server answered ${res.status}`;
}

function errorBox(text) {
  return h('p', { class: 'error', role: 'alert', text });
}

/** A table in a scrolling box, with a caption (visible or for screen readers). */
function table(caption, headers, rows, opts) {
  const t = h('table', { class: (opts && opts.class) || '' },
    h('caption', { class: opts && opts.hideCaption ? 'visually-hidden' : '', text: caption }),
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col', text: x })))),
    h('tbody', {}, rows));
  return h('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': caption }, t);
}

/** A labelled input (or select) in a field wrapper; `field` names the API field it sets. */
function field(label, control, help) {
  const id = control.id || nextId('f');
  control.id = id;
  const helpEl = help ? h('span', { class: 'help', id: `${id}-help`, text: help }) : null;
  if (helpEl) control.setAttribute('aria-describedby', helpEl.id);
  return h('div', { class: 'field' }, h('label', { for: id, text: label }), control, helpEl);
}

function datalist(id, values) {
  return h('datalist', { id }, values.map((v) => h('option', { value: v })));
}

/** A modal confirmation listing exactly what will happen; resolves to the dialog's answer. */
function confirmDialog(title, lines, confirmLabel, act) {
  const err = h('div', { class: 'dialog-error' });
  const ok = h('button', { type: 'button', class: 'danger', text: confirmLabel });
  const cancel = h('button', { type: 'button', text: 'Cancel' });
  const titleId = nextId('dlg');
  const d = h('dialog', { 'aria-labelledby': titleId },
    h('h2', { id: titleId, text: title }),
    h('ul', { class: 'confirm-list' }, lines.map((l) => h('li', { text: l }))),
    err,
    h('div', { class: 'actions' }, ok, cancel));
  cancel.addEventListener('click', () => { d.close(); d.remove(); });
  d.addEventListener('close', () => d.remove());
  ok.addEventListener('click', async () => {
    ok.disabled = true;
    err.replaceChildren();
    const msg = await act();
    if (msg) {
      err.append(errorBox(msg));
      ok.disabled = false;
    } else if (d.open) {
      d.close();
    }
  });
  document.body.append(d);
  d.showModal();
  cancel.focus();
}

// ---- field errors (a 422 names fields; each message goes next to its field) ------------

function clearErrors(form) {
  form.querySelectorAll('.field-error').forEach((e) => e.remove());
  form.querySelectorAll('[aria-invalid]').forEach((e) => {
    e.removeAttribute('aria-invalid');
    const help = e.dataset.help;
    if (help) e.setAttribute('aria-describedby', help); else e.removeAttribute('aria-describedby');
  });
  form.querySelectorAll('.form-errors').forEach((e) => e.replaceChildren());
}

/** The control a field path names: exact, a node's inherited default, or its parent. */
function controlFor(form, path, fallbacks) {
  const find = (p) => form.querySelector(`[data-field="${CSS.escape(p)}"]`);
  let c = find(path);
  if (c) return c;
  for (const [re, to] of fallbacks || []) {
    const m = path.match(re);
    if (m && (c = find(path.replace(re, to)))) return c;
  }
  let p = path;
  while (p.includes('.') || p.endsWith(']')) {
    p = p.replace(/(\.[^.[\]]+|\[\d+\])$/, '');
    if ((c = find(p))) return c;
    if (!/[.[]/.test(p)) break;
  }
  return null;
}

function showFieldErrors(form, fields, fallbacks) {
  const general = form.querySelector('.form-errors');
  let first = null;
  for (const f of fields) {
    const c = controlFor(form, f.field, fallbacks);
    if (!c) {
      general.append(errorBox(`${f.field}: ${f.message}`));
      continue;
    }
    const id = nextId('err');
    const msg = h('p', { class: 'field-error', id, 'data-for': f.field, text: f.message });
    c.closest('.field').append(msg);
    c.setAttribute('aria-invalid', 'true');
    if (!c.dataset.help && c.getAttribute('aria-describedby')) c.dataset.help = c.getAttribute('aria-describedby');
    c.setAttribute('aria-describedby', [c.dataset.help, id].filter(Boolean).join(' '));
    if (!first) first = c;
  }
  (first || general).focus && (first || general).focus();
}

/** Shows a refused write on its form: field errors beside their fields, anything else on top. */
function showRefusal(form, res, fallbacks) {
  clearErrors(form);
  if (res.data && Array.isArray(res.data.fields) && res.data.fields.length) {
    showFieldErrors(form, res.data.fields, fallbacks);
  } else {
    form.querySelector('.form-errors').append(errorBox(problem(res)));
  }
  announce('The request was refused; see the messages next to the fields.');
}

// ---- clusters and their workers --------------------------------------------------------

function unhealthy(n) {
  if (n.failure_reason || n.failure_message) return n.failure_message || n.failure_reason;
  if (n.server && ['ERROR', 'SHUTOFF'].includes(n.server.status)) return `server ${n.server.status}`;
  if (!n.healthy) return n.node ? 'NodeHealthy not reported' : 'no Node yet';
  if (n.healthy.status !== 'True') return n.healthy.message || n.healthy.reason || `NodeHealthy ${n.healthy.status}`;
  return null;
}

function quotaBars(q) {
  const items = (q.quota || []).map((i) => {
    const id = nextId('q');
    const unlimited = i.limit < 0;
    const coming = (q.in_flight || {})[i.resource] || 0;
    const text = (unlimited ? `${i.used} used (no limit)` : `${i.used} of ${i.limit} used`)
      + (coming ? `, ${coming} more for jobs in flight` : '');
    return h('div', { class: 'quota-item' },
      h('span', { id, class: 'quota-name', text: i.resource }),
      unlimited
        ? h('span', { class: 'bar-none' })
        : h('meter', { min: '0', max: String(Math.max(i.limit, 1)), value: String(i.used),
          high: String(i.limit * 0.8), optimum: '0', 'aria-labelledby': id, title: text }),
      h('span', { class: 'quota-text', text }));
  });
  return h('div', { class: 'quota' }, items);
}

function workerRow(cluster, n, selected) {
  const reason = unhealthy(n);
  const fixed = (n.addresses || []).filter((a) => !(n.floating_ips || []).includes(a));
  const labels = Object.entries(n.labels || {}).map(([k, v]) => {
    const role = k.match(/^node-role\.kubernetes\.io\/(.+)$/);
    return role ? `role ${role[1]}` : `${k}=${v}`;
  }).concat((n.taints || []).map((t) => `taint ${t.key}${t.value ? `=${t.value}` : ''}:${t.effect}`));
  const vols = (n.volumes || []).map((v) => `${v.name} ${v.size_gib} GiB ${v.type || ''}`.trim());
  const s = n.server || {};
  const box = h('input', {
    type: 'checkbox', 'aria-label': `Select ${n.machine}`, 'data-machine': n.machine,
    'data-unhealthy': reason ? 'true' : 'false',
    onchange: (e) => { if (e.target.checked) selected.add(n.machine); else selected.delete(n.machine); },
  });
  return h('tr', { 'data-machine': n.machine },
    h('td', {}, box),
    h('th', { scope: 'row' }, n.machine, n.node && n.node !== n.machine ? h('div', { class: 'sub', text: `Node ${n.node}` }) : null),
    h('td', { text: [s.availability_zone || n.failure_domain, s.host].filter(Boolean).join(' / ') || '—' }),
    h('td', { text: fixed.join(', ') || '—' }),
    h('td', { text: (n.floating_ips || []).join(', ') || '—' }),
    h('td', { text: s.flavor || '—' }),
    h('td', { text: vols.join(', ') || '—' }),
    h('td', { text: labels.join(', ') || '—' }),
    h('td', { text: n.phase || '—' }),
    h('td', { text: n.node_ready ? n.node_ready.status : '—' }),
    h('td', { text: s.status || '—' }),
    h('td', {}, n.job ? h('a', { href: `/ui/jobs/${enc(n.job)}`, text: n.job.slice(0, 8) }) : '—'),
    h('td', { class: reason ? 'bad' : 'good', text: reason ? `unhealthy: ${reason}` : 'healthy' }));
}

async function clusterSection(c) {
  const headId = nextId('c');
  const sec = h('section', { class: 'cluster', 'aria-labelledby': headId },
    h('h2', { id: headId, text: c.cluster }),
    h('p', { class: 'sub', text: `tenant ${c.tenant || '—'} · ${c.workers} worker${c.workers === 1 ? '' : 's'}` }),
    h('p', {}, h('a', { class: 'button', href: `/ui/clusters/${enc(c.ns)}/${enc(c.name)}/add`, text: `Add workers to ${c.cluster}` })));
  const [nodes, quota] = await Promise.all([
    api('GET', `/v1/clusters/${enc(c.ns)}/${enc(c.name)}/nodes`),
    api('GET', `/v1/clusters/${enc(c.ns)}/${enc(c.name)}/quota`),
  ]);
  sec.append(h('h3', { text: 'Quota of the project' }));
  sec.append(quota.ok ? quotaBars(quota.data) : errorBox(problem(quota)));
  sec.append(h('h3', { text: 'Workers' }));
  if (!nodes.ok) {
    sec.append(errorBox(problem(nodes)));
    return sec;
  }
  const workers = nodes.data.nodes.filter((n) => !n.control_plane);
  const selected = new Set();
  const rows = workers.map((n) => workerRow(c, n, selected));
  sec.append(table(`Workers of ${c.cluster}`,
    ['Select', 'Name', 'AZ / host', 'Fixed IP', 'Floating IP', 'Flavor', 'Volumes', 'Roles / labels',
      'Machine phase', 'Node ready', 'Server', 'Job', 'Health'], rows, { hideCaption: true, class: 'workers' }));
  const forceId = nextId('force');
  const force = h('input', { id: forceId, value: '15m', size: '6', 'aria-describedby': `${forceId}-help` });
  const chosen = () => workers.map((n) => n.machine).filter((m) => selected.has(m));
  const need = (what) => {
    if (chosen().length) return true;
    announce(`Select the workers to ${what} first.`);
    alertNear(sec, `Select the workers to ${what} first.`);
    return false;
  };
  const submitJob = async (body) => {
    const res = await api('POST', '/v1/jobs', body, { 'Idempotency-Key': newKey() });
    if (res.ok) {
      location.assign(`/ui/jobs/${enc(res.data.id)}`);
      return null;
    }
    const fields = (res.data && res.data.fields) || [];
    return fields.length ? fields.map((f) => `${f.field}: ${f.message}`).join('; ') : problem(res);
  };
  sec.append(h('div', { class: 'actions worker-actions' },
    h('button', {
      type: 'button', text: 'Select unhealthy',
      onclick: () => {
        sec.querySelectorAll('input[type=checkbox][data-machine]').forEach((b) => {
          b.checked = b.dataset.unhealthy === 'true';
          b.dispatchEvent(new Event('change'));
        });
      },
    }),
    h('span', { class: 'field inline' }, h('label', { for: forceId, text: 'Force after' }), force,
      h('span', { class: 'help', id: `${forceId}-help`, text: 'then deleted through OpenStack' })),
    h('button', {
      type: 'button', class: 'danger', text: 'Remove selected',
      onclick: () => {
        if (!need('remove')) return;
        const names = chosen();
        confirmDialog(`Remove ${names.length} worker${names.length === 1 ? '' : 's'} from ${c.cluster}?`,
          [...names.map((m) => `${m} is deleted (Machine, server, ports, volumes, floating IP)`),
            `Forced through OpenStack after ${force.value || 'never'}`],
          'Remove', () => submitJob({ kind: 'delete_nodes', cluster: c.cluster, nodes: names,
            ...(force.value ? { force_after: force.value } : {}) }));
      },
    }),
    h('button', {
      type: 'button', text: 'Repair selected',
      onclick: () => {
        if (!need('repair')) return;
        const names = chosen();
        confirmDialog(`Repair ${names.length} worker${names.length === 1 ? '' : 's'} of ${c.cluster}?`,
          names.map((m) => `${m} is deleted and made again with the same spec, if unhealthy`),
          'Repair', () => submitJob({ kind: 'repair', cluster: c.cluster, nodes: names }));
      },
    })));
  return sec;
}

function alertNear(sec, text) {
  sec.querySelectorAll('.inline-alert').forEach((e) => e.remove());
  sec.append(h('p', { class: 'error inline-alert', role: 'alert', text }));
}

async function clustersPage() {
  document.title = 'Clusters · Capstan';
  const m = main();
  m.replaceChildren(h('h1', { text: 'Clusters' }));
  const res = await api('GET', '/v1/clusters');
  if (!res.ok) { m.append(errorBox(problem(res))); return; }
  if (!res.data.clusters.length) m.append(h('p', { text: 'No cluster of yours is visible.' }));
  for (const c of res.data.clusters) m.append(await clusterSection(c));
}

// ---- add workers ----------------------------------------------------------------------

function csv(s) { return s.split(',').map((x) => x.trim()).filter(Boolean); }

function nodeRow(form, cat, list, index) {
  const i = index;
  const zoneSel = h('select', { 'data-field': `nodes[${i}].availability_zone`, name: 'availability_zone' },
    h('option', { value: '', text: '(cloud decides)' }), cat.availability_zones.map((z) => h('option', { value: z, text: z })));
  const hostSel = h('select', { 'data-field': `nodes[${i}].host`, name: 'host', disabled: cat.hosts === null },
    h('option', { value: '', text: cat.hosts === null ? '(not visible to these credentials)' : '(any host)' }));
  const fillHosts = () => {
    const keep = hostSel.value;
    hostSel.querySelectorAll('option:not(:first-child)').forEach((o) => o.remove());
    for (const x of cat.hosts || []) {
      if (!zoneSel.value || x.zone === zoneSel.value) hostSel.append(h('option', { value: x.host, text: `${x.host} (${x.zone})` }));
    }
    hostSel.value = [...hostSel.options].some((o) => o.value === keep) ? keep : '';
  };
  zoneSel.addEventListener('change', fillHosts);
  fillHosts();
  const fipSel = h('select', { 'data-field': `nodes[${i}].floating_ip`, name: 'floating_ip' },
    h('option', { value: '', text: 'none' }), h('option', { value: 'true', text: 'allocate one' }),
    cat.floating_ips.map((f) => h('option', { value: f.address, text: `${f.address} (${f.network})` })));
  const legendId = nextId('node');
  const row = h('fieldset', { class: 'node-row', 'aria-labelledby': legendId },
    h('legend', { id: legendId, text: `Node ${i + 1}` }),
    h('div', { class: 'grid' },
      field('Name', h('input', { 'data-field': `nodes[${i}].name`, name: 'name', required: true, autocomplete: 'off', spellcheck: 'false' })),
      field('Availability zone', zoneSel),
      field('Compute host', hostSel),
      field('Fixed IP', h('input', { 'data-field': `nodes[${i}].ip`, name: 'ip', inputmode: 'decimal', placeholder: 'from the subnet' })),
      field('Floating IP', fipSel),
      field('Data volume size (GiB)', h('input', { 'data-field': `nodes[${i}].data_volumes[0].size_gib`, name: 'data_size', type: 'number', min: '1' })),
      field('Data volume type', h('input', { 'data-field': `nodes[${i}].data_volumes[0].type`, name: 'data_type', list: 'cat-types', autocomplete: 'off' })),
      field('Roles', h('input', { 'data-field': `nodes[${i}].roles`, name: 'roles', placeholder: 'ingress, gpu' }), 'comma-separated'),
      field('Labels', h('input', { 'data-field': `nodes[${i}].labels`, name: 'labels', placeholder: 'team=edge' }), 'key=value, comma-separated'),
      field('Taints', h('input', { 'data-field': `nodes[${i}].taints`, name: 'taints', placeholder: 'dedicated=gpu:NoSchedule' }), 'key=value:Effect, comma-separated')),
    h('button', {
      type: 'button', class: 'link', text: `Remove node ${i + 1} from the form`,
      onclick: () => { row.remove(); renumber(list); form.dispatchEvent(new Event('input')); },
    }));
  return row;
}

/** Keeps rows' field paths in step with their position (preflight names nodes by index). */
function renumber(list) {
  [...list.children].forEach((row, i) => {
    row.querySelector('legend').textContent = `Node ${i + 1}`;
    row.querySelectorAll('[data-field]').forEach((c) => {
      c.dataset.field = c.dataset.field.replace(/^nodes\[\d+\]/, `nodes[${i}]`);
    });
    const b = row.querySelector('button.link');
    if (b) b.textContent = `Remove node ${i + 1} from the form`;
  });
}

function readNode(row) {
  const v = (n) => row.querySelector(`[name=${n}]`).value.trim();
  const n = { name: v('name') };
  if (v('availability_zone')) n.availability_zone = v('availability_zone');
  if (v('host')) n.host = v('host');
  if (v('ip')) n.ip = v('ip');
  const fip = v('floating_ip');
  if (fip) n.floating_ip = fip === 'true' ? true : fip;
  if (v('data_size') || v('data_type')) {
    const d = { name: 'data', size_gib: Number(v('data_size') || 10) };
    if (v('data_type')) d.type = v('data_type');
    n.data_volumes = [d];
  }
  if (v('roles')) n.roles = csv(v('roles'));
  if (v('labels')) {
    n.labels = Object.fromEntries(csv(v('labels')).map((kv) => {
      const [k, ...rest] = kv.split('=');
      return [k.trim(), rest.join('=').trim()];
    }));
  }
  if (v('taints')) {
    n.taints = csv(v('taints')).map((t) => {
      const m = t.match(/^([^=:]+)(?:=([^:]*))?:(.+)$/);
      return m ? { key: m[1], ...(m[2] ? { value: m[2] } : {}), effect: m[3] } : { key: t };
    });
  }
  return n;
}

function quotaShortfall(quota, cat, flavorName, nodes) {
  if (!quota) return [];
  const f = cat.flavors.find((x) => x.name === flavorName);
  const need = { instances: nodes.length, cores: f ? f.vcpus * nodes.length : 0, ram: f ? f.ram_mib * nodes.length : 0 };
  need.floatingip = nodes.filter((n) => n.floating_ip).length;
  const out = [];
  for (const q of quota.quota || []) {
    const n = need[q.resource];
    if (!n || q.limit < 0) continue;
    const coming = (quota.in_flight || {})[q.resource] || 0;
    const free = q.limit - q.used - coming;
    if (n > free) {
      out.push(`${q.resource}: needs ${n}, ${Math.max(free, 0)} free (${q.used} of ${q.limit} used${coming ? `, ${coming} for jobs in flight` : ''})`);
    }
  }
  return out;
}

async function addPage(ns, name) {
  const cluster = `${ns}/${name}`;
  document.title = `Add workers to ${cluster} · Capstan`;
  const m = main();
  m.replaceChildren(h('h1', { text: `Add workers to ${cluster}` }));
  const [catRes, quotaRes] = await Promise.all([
    api('GET', `/v1/clusters/${enc(ns)}/${enc(name)}/catalog`),
    api('GET', `/v1/clusters/${enc(ns)}/${enc(name)}/quota`),
  ]);
  if (!catRes.ok) { m.append(errorBox(problem(catRes))); return; }
  const cat = catRes.data;
  const quota = quotaRes.ok ? quotaRes.data : null;
  const internal = cat.networks.filter((n) => !n.external);
  const net0 = internal[0] || cat.networks[0] || { name: '', subnets: [] };
  const subnets = cat.networks.flatMap((n) => n.subnets.map((s) => s.name));
  const types = cat.volume_types.filter((t) => t !== '__DEFAULT__');
  const form = h('form', { class: 'add', novalidate: true, 'aria-describedby': 'add-help' });
  const list = h('div', { class: 'node-rows' });
  const shortfall = h('div', { class: 'shortfall', 'aria-live': 'polite' });
  const key = { value: newKey() };
  form.append(
    h('p', { id: 'add-help', text: 'Every field of the defaults applies to each node unless the node sets it. Choices come from the cluster\'s cloud, read with its own credentials.' }),
    h('div', { class: 'form-errors', tabindex: '-1' }),
    datalist('cat-flavors', cat.flavors.map((f) => f.name)),
    datalist('cat-images', cat.images),
    datalist('cat-networks', cat.networks.map((n) => n.name)),
    datalist('cat-subnets', subnets),
    datalist('cat-types', cat.volume_types),
    h('fieldset', {},
      h('legend', { text: 'Defaults' }),
      h('div', { class: 'grid' },
        field('Flavor', h('input', { 'data-field': 'defaults.flavor', name: 'flavor', list: 'cat-flavors', value: (cat.flavors[0] || {}).name || '', required: true, autocomplete: 'off' }),
          cat.flavors.map((f) => `${f.name}: ${f.vcpus} vCPU, ${f.ram_mib} MiB`).join('; ')),
        field('Image', h('input', { 'data-field': 'defaults.image', name: 'image', list: 'cat-images', value: cat.images[0] || '', required: true, autocomplete: 'off' })),
        field('Network', h('input', { 'data-field': 'defaults.network', name: 'network', list: 'cat-networks', value: net0.name, required: true, autocomplete: 'off' })),
        field('Subnet', h('input', { 'data-field': 'defaults.subnet', name: 'subnet', list: 'cat-subnets', value: (net0.subnets[0] || {}).name || '', required: true, autocomplete: 'off' })),
        field('Root volume size (GiB)', h('input', { 'data-field': 'defaults.root_volume.size_gib', name: 'root_size', type: 'number', min: '1', value: '20' }), 'empty: boot from the image'),
        field('Root volume type', h('input', { 'data-field': 'defaults.root_volume.type', name: 'root_type', list: 'cat-types', value: types[0] || '', autocomplete: 'off' })))),
    h('h2', { text: 'Nodes' }),
    list,
    h('p', {}, h('button', {
      type: 'button', text: 'Add a node',
      onclick: () => {
        const row = nodeRow(form, cat, list, list.children.length);
        list.append(row);
        row.querySelector('input').focus();
        form.dispatchEvent(new Event('input'));
      },
    })),
    shortfall,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', text: 'Add these workers' }),
      h('a', { href: '/ui/clusters', text: 'Back to clusters' })));
  list.append(nodeRow(form, cat, list, 0));
  const val = (n) => form.querySelector(`[name=${n}]`).value.trim();
  const build = () => {
    const defaults = { flavor: val('flavor'), image: val('image'), network: val('network'), subnet: val('subnet') };
    if (val('root_size')) {
      defaults.root_volume = { size_gib: Number(val('root_size')) };
      if (val('root_type')) defaults.root_volume.type = val('root_type');
    }
    return { kind: 'scale_out', cluster, defaults, nodes: [...list.children].map(readNode) };
  };
  form.addEventListener('input', () => {
    const lines = quotaShortfall(quota, cat, val('flavor'), build().nodes);
    shortfall.replaceChildren(...(lines.length
      ? [h('p', { class: 'warn', text: 'The project\'s quota is short for all of these now; the nodes that do not fit wait for room:' }),
        h('ul', {}, lines.map((l) => h('li', { text: l })))]
      : quota ? [h('p', { class: 'sub', text: 'The project\'s quota has room for these nodes.' })] : []));
  });
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(form);
    const body = build();
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    const res = await api('POST', '/v1/jobs', body, { 'Idempotency-Key': key.value });
    button.disabled = false;
    if (res.ok) {
      location.assign(`/ui/jobs/${enc(res.data.id)}`);
      return;
    }
    key.value = newKey();
    showRefusal(form, res, [[/^nodes\[\d+\]\./, 'defaults.']]);
  });
  m.append(form);
  form.dispatchEvent(new Event('input'));
}

// ---- jobs -----------------------------------------------------------------------------

function jobRow(j) {
  return h('tr', { 'data-job': j.id },
    h('th', { scope: 'row' }, h('a', { href: `/ui/jobs/${enc(j.id)}`, text: j.id.slice(0, 8), 'aria-label': `Job ${j.id}` })),
    h('td', { text: j.kind }), h('td', { text: j.cluster }), h('td', { text: j.tenant }),
    h('td', { text: j.owner }), h('td', {}, h('span', { class: `state s-${j.state}`, text: j.state })),
    h('td', { text: when(j.created_at) }));
}

async function jobsPage() {
  document.title = 'Jobs · Capstan';
  const m = main();
  const q = new URLSearchParams(location.search);
  const select = (name, label, values) => field(label, h('select', { name },
    h('option', { value: '', text: 'any' }), values.map((v) => h('option', { value: v, text: v, selected: q.get(name) === v }))));
  const filters = h('form', { class: 'filters', method: 'get', action: '/ui/jobs', role: 'search', 'aria-label': 'Filter jobs' },
    select('state', 'State', JOB_STATES), select('kind', 'Kind', JOB_KINDS),
    field('Cluster', h('input', { name: 'cluster', value: q.get('cluster') || '', placeholder: 'ns/name' })),
    me.role === 'admin' ? field('Tenant', h('input', { name: 'tenant', value: q.get('tenant') || '' })) : null,
    h('button', { type: 'submit', text: 'Filter' }));
  m.replaceChildren(h('h1', { text: 'Jobs' }), filters);
  const params = new URLSearchParams();
  for (const k of ['state', 'kind', 'cluster', 'tenant']) if (q.get(k)) params.set(k, q.get(k));
  const tbody = h('tbody');
  const more = h('button', { type: 'button', text: 'Older jobs', hidden: true });
  let cursor = null;
  const load = async () => {
    const p = new URLSearchParams(params);
    if (cursor) p.set('cursor', cursor);
    const res = await api('GET', `/v1/jobs?${p}`);
    if (!res.ok) { m.append(errorBox(problem(res))); return; }
    res.data.jobs.forEach((j) => tbody.append(jobRow(j)));
    cursor = res.data.next_cursor;
    more.hidden = !cursor;
    if (!tbody.children.length) tbody.append(h('tr', {}, h('td', { colspan: '7', text: 'No jobs.' })));
  };
  more.addEventListener('click', load);
  const t = table('Jobs', ['Job', 'Kind', 'Cluster', 'Tenant', 'Owner', 'State', 'Created'], []);
  t.querySelector('tbody').replaceWith(tbody);
  m.append(t, more);
  await load();
}

function nodesTable(job, onAmend) {
  const rows = (job.nodes || []).map((n) => h('tr', { 'data-node': n.name },
    h('th', { scope: 'row', text: n.name }),
    h('td', {}, h('span', { class: `state s-${n.status}`, text: n.status })),
    h('td', { text: n.state }),
    h('td', { text: `${n.attempt} (${n.attempts_total} in all)` }),
    h('td', { text: n.failure_class || '—' }),
    h('td', { class: 'msg', text: n.last_error || '—' }),
    h('td', { text: n.wait ? `${n.wait.reason}${n.wait.until ? ` until ${when(n.wait.until)}` : ''}` : '—' }),
    h('td', {}, n.status === 'needs_input' && onAmend
      ? h('button', { type: 'button', text: `Amend ${n.name}`, onclick: () => onAmend(n) }) : '')));
  return table('Nodes of this job', ['Node', 'Status', 'Step', 'Attempt', 'Failure class', 'Last error', 'Waiting for', ''], rows, { class: 'nodes' });
}

function eventRow(e) {
  const moved = e.from || e.to ? `${e.from || ''} → ${e.to || ''}` : '';
  return h('tr', { 'data-event': String(e.id), class: e.class ? 'failed-attempt' : '' },
    h('td', { text: when(e.at) }), h('td', { text: e.node || '—' }), h('td', { text: e.kind }),
    h('td', { text: moved }), h('td', { text: e.attempt ?? '' }), h('td', { text: e.class || '' }),
    h('td', { class: 'msg', text: e.message || '' }));
}

/** The amend form of a needs_input node: changed fields only, as a merge patch. */
function amendForm(job, node, cat, refresh) {
  const spec = node.spec || {};
  const form = h('form', { class: 'amend', novalidate: true, 'aria-labelledby': 'amend-title' });
  const inputs = [];
  const text = (label, path, value, list) => {
    const c = h('input', { 'data-field': path, value: value ?? '', list, autocomplete: 'off' });
    inputs.push([path, c, value ?? '']);
    return field(label, c);
  };
  const fields = [
    text('Flavor', 'flavor', spec.flavor, 'amend-flavors'),
    text('Image', 'image', spec.image),
    text('Availability zone', 'availability_zone', spec.availability_zone),
    text('Compute host', 'host', spec.host),
    text('Subnet', 'subnet', spec.subnet),
    text('Fixed IP', 'ip', spec.ip),
  ];
  if (spec.root_volume) fields.push(text('Root volume type', 'root_volume.type', spec.root_volume.type, 'amend-types'));
  (spec.data_volumes || []).forEach((d, i) => fields.push(text(`Data volume ${d.name} type`, `data_volumes[${i}].type`, d.type, 'amend-types')));
  form.append(
    h('h2', { id: 'amend-title', text: `Amend ${node.name}` }),
    h('p', { class: 'msg', text: node.last_error || '' }),
    h('div', { class: 'form-errors', tabindex: '-1' }),
    datalist('amend-types', cat ? cat.volume_types : []),
    datalist('amend-flavors', cat ? cat.flavors.map((f) => f.name) : []),
    h('div', { class: 'grid' }, fields),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', text: `Save ${node.name}` }),
      h('button', { type: 'button', text: 'Close', onclick: () => form.remove() })));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(form);
    const patch = {};
    for (const [path, c, was] of inputs) {
      const v = c.value.trim();
      if (v === String(was)) continue;
      const dv = path.match(/^data_volumes\[(\d+)\]\.type$/);
      if (dv) {
        patch.data_volumes = patch.data_volumes || JSON.parse(JSON.stringify(spec.data_volumes));
        patch.data_volumes[Number(dv[1])].type = v || null;
      } else if (path === 'root_volume.type') {
        patch.root_volume = { ...spec.root_volume, type: v || null };
      } else {
        patch[path] = v || null;
      }
    }
    if (!Object.keys(patch).length) {
      form.querySelector('.form-errors').append(errorBox('Change a field first.'));
      return;
    }
    const res = await api('PATCH', `/v1/jobs/${enc(job.id)}/nodes/${enc(node.name)}`, patch);
    if (!res.ok) { showRefusal(form, res); return; }
    announce(`${node.name} amended; resume the job to go on.`);
    form.replaceChildren(h('p', { class: 'good', role: 'status', text: `${node.name} amended. Resume the job to retry it.` }));
    refresh();
  });
  return form;
}

async function jobPage(id) {
  document.title = 'Job · Capstan';
  const m = main();
  const res = await api('GET', `/v1/jobs/${enc(id)}`);
  if (!res.ok) { m.replaceChildren(h('h1', { text: 'Job' }), errorBox(problem(res))); return; }
  let job = res.data;
  let cat;
  const head = h('div');
  const actions = h('div', { class: 'actions' });
  const nodesBox = h('div');
  const amendBox = h('div');
  const history = h('tbody');
  const seen = new Set();
  const stateLive = h('span', { id: 'job-state', 'aria-live': 'polite' });
  const render = () => {
    document.title = `${job.kind} ${job.cluster} (${job.state}) · Capstan`;
    stateLive.replaceChildren(h('span', { class: `state s-${job.state}`, text: job.state }));
    head.replaceChildren(
      h('h1', { text: `${job.kind} on ${job.cluster}` }),
      h('dl', { class: 'facts' },
        h('dt', { text: 'State' }), h('dd', {}, stateLive),
        h('dt', { text: 'Job' }), h('dd', { text: job.id }),
        h('dt', { text: 'Tenant / owner' }), h('dd', { text: `${job.tenant} / ${job.owner}` }),
        h('dt', { text: 'Created' }), h('dd', { text: when(job.created_at) }),
        h('dt', { text: 'Finished' }), h('dd', { text: when(job.finished_at) }),
        h('dt', { text: 'Nodes' }), h('dd', { text: Object.entries(job.node_counts || {}).map(([k, v]) => `${v} ${k}`).join(', ') || '—' })));
    actions.replaceChildren();
    if (!TERMINAL.includes(job.state) && !job.cancel_requested) {
      actions.append(h('button', {
        type: 'button', class: 'danger', text: 'Cancel job',
        onclick: () => confirmDialog('Cancel this job?', [`${job.kind} on ${job.cluster}: in-flight steps finish, nothing new starts`],
          'Cancel job', async () => {
            const r = await api('POST', `/v1/jobs/${enc(job.id)}/cancel`, {});
            if (!r.ok) return problem(r);
            await refresh();
            return null;
          }),
      }));
    }
    const waitsForInput = (job.nodes || []).some((n) => n.status === 'needs_input');
    if ((job.state === 'needs_input' || waitsForInput) && !job.cancel_requested) {
      actions.append(h('button', {
        type: 'button', class: 'primary', text: 'Resume job',
        onclick: async (e) => {
          e.target.disabled = true;
          const r = await api('POST', `/v1/jobs/${enc(job.id)}/resume`, {});
          e.target.disabled = false;
          if (!r.ok) { actions.append(errorBox(problem(r))); return; }
          announce('Job resumed.');
          job = r.data;
          render();
        },
      }));
    }
    nodesBox.replaceChildren(nodesTable(job, async (n) => {
      if (cat === undefined) {
        const [ns, name] = job.cluster.split('/');
        const c = await api('GET', `/v1/clusters/${enc(ns)}/${enc(name)}/catalog`);
        cat = c.ok ? c.data : null;
      }
      amendBox.replaceChildren(amendForm(job, n, cat, refresh));
      amendBox.querySelector('input').focus();
    }));
  };
  let pending = null;
  const refresh = async () => {
    const r = await api('GET', `/v1/jobs/${enc(id)}`);
    if (r.ok) { job = r.data; render(); }
  };
  const soon = () => {
    if (pending) return;
    pending = setTimeout(async () => { pending = null; await refresh(); }, 150);
  };
  const add = (e) => {
    if (seen.has(e.id)) return;
    seen.add(e.id);
    history.append(eventRow(e));
  };
  render();
  const hist = table('History', ['Time', 'Node', 'Event', 'Transition', 'Attempt', 'Failure class', 'Message'], [], { class: 'history' });
  hist.querySelector('tbody').replaceWith(history);
  m.replaceChildren(head, actions, h('h2', { text: 'Nodes' }), nodesBox, amendBox, h('h2', { text: 'History' }), hist);
  // Live: the history as it is written (SSE); each event refreshes the node table.
  if (window.EventSource) {
    const es = new EventSource(`/v1/jobs/${enc(id)}/events`);
    const onEvent = (msg) => {
      try { add(JSON.parse(msg.data)); } catch (_) { return; }
      soon();
    };
    EVENT_KINDS.forEach((k) => es.addEventListener(k, onEvent));
    es.onmessage = onEvent;
    es.onerror = async () => {
      await refresh();
      if (TERMINAL.includes(job.state)) es.close();
    };
  } else {
    const r = await api('GET', `/v1/jobs/${enc(id)}/events`);
    if (r.ok) r.data.events.forEach(add);
  }
}

// ---- schedules ------------------------------------------------------------------------

const SWEEP_PARAMS = {
  repair_sweep: { max_parallel: 1, max_unhealthy: '40%', unhealthy_after: '5m' },
  orphan_sweep: { grace: '1h', dry_run: true },
};

async function schedulesPage() {
  document.title = 'Schedules · Capstan';
  const m = main();
  m.replaceChildren(h('h1', { text: 'Schedules' }));
  const [res, clusters] = await Promise.all([api('GET', '/v1/schedules'), api('GET', '/v1/clusters')]);
  if (!res.ok) { m.append(errorBox(problem(res))); return; }
  const rows = res.data.schedules.map((s) => h('tr', { 'data-schedule': s.name },
    h('th', { scope: 'row', text: s.name }), h('td', { text: s.job && s.job.cluster }), h('td', { text: s.job && s.job.kind }),
    h('td', {}, h('code', { text: s.cron })), h('td', { text: s.enabled ? 'enabled' : 'paused' }),
    h('td', { text: when(s.next_fire_at) }),
    h('td', {}, s.last_job_id ? h('a', { href: `/ui/jobs/${enc(s.last_job_id)}`, text: s.last_job_id.slice(0, 8) }) : '—'),
    h('td', { class: 'msg', text: s.last_error || '—' }), h('td', { text: `${s.tenant} / ${s.owner}` }),
    h('td', {},
      h('button', {
        type: 'button', text: s.enabled ? `Pause ${s.name}` : `Enable ${s.name}`,
        onclick: async () => {
          const r = await api('PATCH', `/v1/schedules/${enc(s.id)}`, { enabled: !s.enabled });
          if (!r.ok) { m.append(errorBox(problem(r))); return; }
          schedulesPage();
        },
      }),
      h('button', {
        type: 'button', class: 'danger', text: `Delete ${s.name}`,
        onclick: () => confirmDialog(`Delete schedule ${s.name}?`, [`${s.job.kind} on ${s.job.cluster} at ${s.cron} no longer fires; its jobs stay`],
          'Delete', async () => {
            const r = await api('DELETE', `/v1/schedules/${enc(s.id)}`);
            if (!r.ok) return problem(r);
            schedulesPage();
            return null;
          }),
      }))));
  m.append(table('Schedules', ['Name', 'Cluster', 'Kind', 'Cron', 'State', 'Next', 'Last job', 'Last error', 'Tenant / owner', 'Actions'],
    rows.length ? rows : [h('tr', {}, h('td', { colspan: '10', text: 'No schedules.' }))]));
  const names = clusters.ok ? clusters.data.clusters.map((c) => c.cluster) : [];
  const kind = h('select', { 'data-field': 'job.kind', name: 'kind' }, Object.keys(SWEEP_PARAMS).map((k) => h('option', { value: k, text: k })));
  const params = h('textarea', { 'data-field': 'job.params', name: 'params', rows: '3', spellcheck: 'false' });
  params.value = JSON.stringify(SWEEP_PARAMS[kind.value]);
  kind.addEventListener('change', () => { params.value = JSON.stringify(SWEEP_PARAMS[kind.value]); });
  const form = h('form', { class: 'schedule', novalidate: true, 'aria-labelledby': 'new-schedule' },
    h('h2', { id: 'new-schedule', text: 'New schedule' }),
    h('div', { class: 'form-errors', tabindex: '-1' }),
    h('div', { class: 'grid' },
      field('Name', h('input', { 'data-field': 'name', name: 'name', required: true })),
      field('Cron', h('input', { 'data-field': 'cron', name: 'cron', value: '*/5 * * * *', required: true }), 'minute hour day month weekday'),
      field('Kind', kind),
      field('Cluster', h('select', { 'data-field': 'job.cluster', name: 'cluster' }, names.map((c) => h('option', { value: c, text: c })))),
      field('Options (JSON)', params)),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', text: 'Create schedule' })));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clearErrors(form);
    let p;
    try { p = JSON.parse(params.value || '{}'); } catch (err) {
      showFieldErrors(form, [{ field: 'job.params', message: `not JSON: ${err.message}` }]);
      return;
    }
    const v = (n) => form.querySelector(`[name=${n}]`).value.trim();
    const r = await api('POST', '/v1/schedules', { name: v('name'), cron: v('cron'), job: { kind: v('kind'), cluster: v('cluster'), params: p } });
    if (!r.ok) { showRefusal(form, r); return; }
    schedulesPage();
  });
  m.append(form);
}

// ---- start ----------------------------------------------------------------------------

async function start() {
  const r = await fetch('/ui/session', { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  if (!r.ok) { location.assign('/ui/login'); return; }
  Object.assign(me, await r.json());
  const scope = me.role === 'admin' ? 'admin of every tenant' : `${me.role.replace('_', ' ')} of ${me.tenant}`;
  document.getElementById('who').textContent = `${me.name} · ${scope}`;
  document.getElementById('signout-csrf').value = me.csrf;
  const path = location.pathname.replace(/\/+$/, '');
  document.querySelectorAll('nav a').forEach((a) => {
    if (path.startsWith(a.getAttribute('href')) || (path === '/ui' && a.getAttribute('href') === '/ui/clusters')) a.setAttribute('aria-current', 'page');
  });
  let mm;
  try {
    if (path === '/ui' || path === '/ui/clusters') await clustersPage();
    else if ((mm = path.match(/^\/ui\/clusters\/([^/]+)\/([^/]+)\/add$/))) await addPage(decodeURIComponent(mm[1]), decodeURIComponent(mm[2]));
    else if (path === '/ui/jobs') await jobsPage();
    else if ((mm = path.match(/^\/ui\/jobs\/([^/]+)$/))) await jobPage(decodeURIComponent(mm[1]));
    else if (path === '/ui/schedules') await schedulesPage();
    else main().replaceChildren(h('h1', { text: 'Not found' }), h('p', {}, 'No such page. ', h('a', { href: '/ui/', text: 'Clusters' })));
  } catch (e) {
    if (e.message !== 'signed out') main().append(errorBox(`The page failed: ${e.message}`));
  }
  document.body.dataset.ready = 'true';
}

document.addEventListener('DOMContentLoaded', start);

// weapp-server admin console: apps and their token health, broker clients, users and sessions,
// push events, the audit log. No framework, nothing from a CDN: embedded in the binary. The
// admin key stays in this tab (sessionStorage) and goes out only as a Bearer header.
'use strict';

const I18N = {
  en: {
    admin: 'admin', logout: 'Log out', loginTitle: 'Admin key',
    loginHelp: 'An [[admins]] key of this server. It stays in this tab only (sessionStorage) and is sent as a Bearer header.',
    keyPlaceholder: 'admin key', enter: 'Enter', badKey: 'That key is not an admin key of this server.',
    tabApps: 'Apps', tabClients: 'Clients', tabUsers: 'Users', tabEvents: 'Push events', tabAudit: 'Audit log',
    source: 'source', state: 'state', mode: 'mode', warm: 'warm', version: 'token version', expires: 'expires in',
    refreshesToday: 'refreshes today', lastError: 'last error', more: 'More', addApp: 'Add an app',
    apiBase: 'api_base (default: WeChat)', warmDefault: 'warm: server default', pushSettings: 'Push settings (optional)',
    create: 'Create', secretsHelp: 'Secrets are sealed with the data key and never shown again.',
    name: 'name', apps: 'apps', scopes: 'scopes', addClient: 'Add a broker client',
    appsPlaceholder: 'appids, comma-separated (* for all)', keyOnce: "The client's key — shown this once, never again:",
    keyDone: 'I have stored it', or: 'or', find: 'Find', phone: 'phone', since: 'since', sessions: 'sessions',
    load: 'Load', received: 'received', kind: 'type', attempts: 'attempts', time: 'time', adminName: 'admin',
    action: 'action', target: 'target', from: 'from', detail: 'detail', enabled: 'enabled', disabled: 'disabled',
    enable: 'Enable', disable: 'Disable', del: 'Delete', rotate: 'New key', revoke: 'End sessions', redeliver: 'Redeliver',
    file: 'file', managed: 'managed', confirmDelete: 'Delete {x}? Every instance stops serving it.',
    created: 'created', saved: 'saved', deleted: 'deleted', revoked: 'sessions ended: {n}', queued: 'queued',
    noRows: 'nothing here', instances: 'instances', shards: 'shards here', refreshers: 'refreshers here',
    delivered: 'delivered', pending: 'pending', dead: 'dead letter', stored: 'stored (no webhook)', none: '—',
  },
  zh: {
    admin: '管理后台', logout: '退出', loginTitle: '管理员密钥',
    loginHelp: '本服务 [[admins]] 中的密钥。只保存在当前标签页（sessionStorage），仅作为 Bearer 请求头发送。',
    keyPlaceholder: '管理员密钥', enter: '进入', badKey: '该密钥不是本服务的管理员密钥。',
    tabApps: '小程序', tabClients: '调用方', tabUsers: '用户', tabEvents: '推送事件', tabAudit: '审计日志',
    source: '来源', state: '状态', mode: '模式', warm: '预热', version: '令牌版本', expires: '剩余有效期',
    refreshesToday: '今日刷新', lastError: '最近错误', more: '更多', addApp: '添加小程序',
    apiBase: 'api_base（默认：微信）', warmDefault: '预热：服务默认', pushSettings: '消息推送设置（可选）',
    create: '创建', secretsHelp: '密钥用数据密钥加密保存，之后不再显示。',
    name: '名称', apps: '小程序', scopes: '权限', addClient: '添加中控调用方',
    appsPlaceholder: 'appid，逗号分隔（* 表示全部）', keyOnce: '调用方密钥——只显示这一次：',
    keyDone: '我已保存', or: '或', find: '查找', phone: '手机号', since: '注册于', sessions: '会话数',
    load: '加载', received: '接收时间', kind: '类型', attempts: '尝试次数', time: '时间', adminName: '管理员',
    action: '操作', target: '对象', from: '来源地址', detail: '详情', enabled: '启用', disabled: '停用',
    enable: '启用', disable: '停用', del: '删除', rotate: '换新密钥', revoke: '结束会话', redeliver: '重新投递',
    file: '配置文件', managed: '后台管理', confirmDelete: '删除 {x}？所有实例将停止服务它。',
    created: '已创建', saved: '已保存', deleted: '已删除', revoked: '已结束会话：{n}', queued: '已排队',
    noRows: '暂无数据', instances: '实例数', shards: '本实例分片', refreshers: '本实例刷新任务',
    delivered: '已送达', pending: '待投递', dead: '死信', stored: '已保存（无 webhook）', none: '—',
  },
};

let lang = localStorage.getItem('weapp-admin-lang') ||
  ((navigator.language || 'en').toLowerCase().startsWith('zh') ? 'zh' : 'en');
const t = (k, vars) => {
  let s = (I18N[lang] && I18N[lang][k]) || I18N.en[k] || k;
  for (const [name, v] of Object.entries(vars || {})) s = s.replace(`{${name}}`, v);
  return s;
};

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c != null) e.append(c instanceof Node ? c : String(c));
  return e;
};

function applyI18n() {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  document.querySelectorAll('[data-i18n]').forEach((n) => { n.textContent = t(n.dataset.i18n); });
  document.querySelectorAll('[data-i18n-ph]').forEach((n) => { n.placeholder = t(n.dataset.i18nPh); });
  $('#lang').textContent = lang === 'zh' ? 'English' : '中文';
}

function toast(message, error) {
  const n = $('#toast');
  n.textContent = message;
  n.className = 'toast' + (error ? ' error' : '');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => n.classList.add('hidden'), 4000);
}

const key = () => sessionStorage.getItem('weapp-admin-key') || '';

class Unauthorized extends Error {}

// `version`: the `rev` the operator saw, sent back as If-Match so that a change made from a
// stale row is refused (412) instead of undoing someone else's.
async function api(method, path, body, version) {
  const opts = { method, headers: { authorization: `Bearer ${key()}` } };
  if (version !== undefined) opts.headers['if-match'] = `"${version}"`;
  if (body !== undefined) {
    opts.headers['content-type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let v;
  try { v = text ? JSON.parse(text) : {}; } catch (_) { v = { error: { message: text } }; }
  if (r.status === 401) throw new Unauthorized((v.error && v.error.message) || 'unauthorized');
  if (!r.ok) throw new Error((v.error && v.error.message) || `HTTP ${r.status}`);
  return v;
}

const pad = (n) => String(n).padStart(2, '0');
function fmtTime(ms) {
  if (!ms) return t('none');
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function fmtSpan(secs) {
  if (secs <= 0) return '0s';
  const h = Math.floor(secs / 3600); const m = Math.floor((secs % 3600) / 60); const s = Math.floor(secs % 60);
  return (h ? `${h}h ` : '') + (h || m ? `${pad(m)}m ` : '') + `${pad(s)}s`;
}

// Every failure is a toast; an unknown key sends the operator back to the key form.
async function guarded(fn) {
  try { await fn(); } catch (e) {
    if (e instanceof Unauthorized) { showLogin(t('badKey')); return; }
    toast(e.message, true);
  }
}

// ----------------------------------------------------------------------------------- login

function showLogin(error) {
  $('#main').classList.add('hidden');
  $('#login').classList.remove('hidden');
  $('#logout').classList.add('hidden');
  $('#login-error').textContent = error || '';
  $('#who').textContent = '';
}

async function enter() {
  await api('GET', '/v1/admin/fleet');
  $('#login').classList.add('hidden');
  $('#main').classList.remove('hidden');
  $('#logout').classList.remove('hidden');
  $('#login-error').textContent = '';
  await Promise.all([refreshFleet(), loadApps(true), loadClients()]);
}

$('#login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  sessionStorage.setItem('weapp-admin-key', $('#key').value.trim());
  $('#key').value = '';
  await guarded(enter);
});
$('#logout').addEventListener('click', () => { sessionStorage.removeItem('weapp-admin-key'); showLogin(); });

// ------------------------------------------------------------------------------------ fleet

async function refreshFleet() {
  const f = await api('GET', '/v1/admin/fleet');
  $('#fleet-line').textContent = `${t('instances')} ${f.instances} · ${t('shards')} ${f.shards_held}/${f.shards} · ${t('refreshers')} ${f.refreshers} · rev ${f.registry_rev}`;
}

// ------------------------------------------------------------------------------------- apps

const appsState = { rows: [], next: null };

function appRow(a) {
  const tk = a.token;
  const now = Date.now() / 1000;
  const actions = el('td', { class: 'actions' });
  if (a.source === 'managed') {
    actions.append(
      el('button', { 'data-testid': 'app-toggle', onclick: () => guarded(async () => {
        try {
          await api('PATCH', `/v1/admin/apps/${encodeURIComponent(a.appid)}`, { enabled: !a.enabled }, a.rev);
          toast(t('saved'));
        } finally { await loadApps(true); }
      }) }, a.enabled ? t('disable') : t('enable')),
      el('button', { class: 'danger', 'data-testid': 'app-delete', onclick: () => guarded(async () => {
        if (!window.confirm(t('confirmDelete', { x: a.appid }))) return;
        await api('DELETE', `/v1/admin/apps/${encodeURIComponent(a.appid)}`);
        toast(t('deleted'));
        await loadApps(true);
      }) }, t('del')),
    );
  }
  return el('tr', { 'data-testid': 'app-row', 'data-appid': a.appid },
    el('td', {}, a.appid),
    el('td', {}, t(a.source)),
    el('td', { class: a.enabled ? 'state-on' : 'state-off', 'data-testid': 'app-state' }, a.enabled ? t('enabled') : t('disabled')),
    el('td', {}, a.token_mode),
    el('td', {}, a.warm),
    el('td', { 'data-testid': 'app-version' }, tk ? tk.version : t('none')),
    el('td', { 'data-testid': 'app-expires' }, tk ? fmtSpan(tk.expires_at - now) : t('none')),
    el('td', { 'data-testid': 'app-refreshes' }, tk ? tk.refreshes_today : 0),
    el('td', { class: tk && tk.last_error ? 'bad' : '' }, (tk && tk.last_error) || ''),
    actions);
}

async function loadApps(reset) {
  if (reset) { appsState.rows = []; appsState.next = null; }
  const q = appsState.next ? `?limit=50&after=${encodeURIComponent(appsState.next)}` : '?limit=50';
  const page = await api('GET', `/v1/admin/apps${q}`);
  appsState.rows = appsState.rows.concat(page.apps);
  appsState.next = page.next_after;
  const body = $('#apps');
  body.replaceChildren(...(appsState.rows.length ? appsState.rows.map(appRow) : [el('tr', {}, el('td', { colSpan: 10, class: 'muted' }, t('noRows')))]));
  $('#apps-more').classList.toggle('hidden', !appsState.next);
  const sel = $('#ev-app');
  const keep = sel.value;
  sel.replaceChildren(...appsState.rows.map((a) => el('option', { value: a.appid }, a.appid)));
  if (keep) sel.value = keep;
}

$('#apps-more').addEventListener('click', () => guarded(() => loadApps(false)));

$('#app-form').addEventListener('submit', (e) => {
  e.preventDefault();
  guarded(async () => {
    const body = { appid: $('#app-appid').value.trim(), secret: $('#app-secret').value, token_mode: $('#app-mode').value };
    const base = $('#app-api-base').value.trim();
    if (base) body.api_base = base;
    if ($('#app-warm').value) body.warm = $('#app-warm').value;
    const token = $('#push-token').value;
    if (token) {
      body.push = { token };
      if ($('#push-aes').value) body.push.encoding_aes_key = $('#push-aes').value;
      if ($('#push-webhook').value.trim()) body.push.webhook_url = $('#push-webhook').value.trim();
      if ($('#push-webhook-secret').value) body.push.webhook_secret = $('#push-webhook-secret').value;
    }
    await api('POST', '/v1/admin/apps', body);
    for (const id of ['#app-appid', '#app-secret', '#app-api-base', '#push-token', '#push-aes', '#push-webhook', '#push-webhook-secret']) $(id).value = '';
    toast(t('created'));
    await loadApps(true);
  });
});

// ---------------------------------------------------------------------------------- clients

const SCOPES = ['token:read', 'token:invalidate', 'events:read', 'events:redeliver', 'sessions:introspect'];
$('#client-scopes').replaceChildren(...SCOPES.map((s) => el('label', { class: 'inline' },
  el('input', { type: 'checkbox', value: s, checked: s.startsWith('token:'), 'data-testid': `scope-${s}` }), s)));

function showKey(k) {
  $('#new-key').textContent = k;
  $('#key-box').classList.remove('hidden');
}
$('#key-done').addEventListener('click', () => { $('#new-key').textContent = ''; $('#key-box').classList.add('hidden'); });

function clientRow(c) {
  const actions = el('td', { class: 'actions' });
  if (c.source === 'managed') {
    const name = encodeURIComponent(c.name);
    actions.append(
      el('button', { 'data-testid': 'client-toggle', onclick: () => guarded(async () => {
        try {
          await api('PATCH', `/v1/admin/clients/${name}`, { enabled: !c.enabled }, c.rev);
          toast(t('saved'));
        } finally { await loadClients(); }
      }) }, c.enabled ? t('disable') : t('enable')),
      el('button', { 'data-testid': 'client-rotate', onclick: () => guarded(async () => {
        try {
          const v = await api('PATCH', `/v1/admin/clients/${name}`, { rotate_key: true }, c.rev);
          showKey(v.key);
        } finally { await loadClients(); }
      }) }, t('rotate')),
      el('button', { class: 'danger', 'data-testid': 'client-delete', onclick: () => guarded(async () => {
        if (!window.confirm(t('confirmDelete', { x: c.name }))) return;
        await api('DELETE', `/v1/admin/clients/${name}`);
        toast(t('deleted'));
        await loadClients();
      }) }, t('del')),
    );
  }
  return el('tr', { 'data-testid': 'client-row', 'data-name': c.name },
    el('td', {}, c.name), el('td', {}, t(c.source)),
    el('td', { class: c.enabled ? 'state-on' : 'state-off', 'data-testid': 'client-state' }, c.enabled ? t('enabled') : t('disabled')),
    el('td', {}, c.apps.join(', ')), el('td', {}, c.scopes.join(' ')), actions);
}

async function loadClients() {
  // Every page (100 at a time).
  const clients = [];
  let after = '';
  for (;;) {
    const page = await api('GET', `/v1/admin/clients?limit=100${after ? `&after=${encodeURIComponent(after)}` : ''}`);
    clients.push(...page.clients);
    if (!page.next_after) break;
    after = page.next_after;
  }
  $('#clients').replaceChildren(...clients.map(clientRow));
}

$('#client-form').addEventListener('submit', (e) => {
  e.preventDefault();
  guarded(async () => {
    const apps = $('#client-apps').value.split(',').map((s) => s.trim()).filter(Boolean);
    const scopes = [...document.querySelectorAll('#client-scopes input:checked')].map((i) => i.value);
    const v = await api('POST', '/v1/admin/clients', { name: $('#client-name').value.trim(), apps, scopes });
    $('#client-name').value = ''; $('#client-apps').value = '';
    showKey(v.key);
    await loadClients();
  });
});

// ------------------------------------------------------------------------------------ users

function userRow(u) {
  return el('tr', { 'data-testid': 'user-row' },
    el('td', {}, u.appid), el('td', {}, u.openid), el('td', {}, u.unionid || ''), el('td', {}, u.phone_number || ''),
    el('td', {}, fmtTime(u.created_at)), el('td', { 'data-testid': 'user-sessions' }, u.sessions),
    el('td', { class: 'actions' }, el('button', { class: 'danger', 'data-testid': 'user-revoke', onclick: () => guarded(async () => {
      const r = await api('POST', `/v1/admin/users/${encodeURIComponent(u.appid)}/${encodeURIComponent(u.openid)}/revoke`);
      toast(t('revoked', { n: r.revoked }));
      await findUsers();
    }) }, t('revoke'))));
}

async function findUsers() {
  const unionid = $('#u-unionid').value.trim();
  const q = unionid ? `unionid=${encodeURIComponent(unionid)}`
    : `appid=${encodeURIComponent($('#u-appid').value.trim())}&openid=${encodeURIComponent($('#u-openid').value.trim())}`;
  const { users } = await api('GET', `/v1/admin/users?${q}`);
  $('#users').replaceChildren(...(users.length ? users.map(userRow) : [el('tr', {}, el('td', { colSpan: 7, class: 'muted' }, t('noRows')))]));
}

$('#user-search').addEventListener('submit', (e) => { e.preventDefault(); guarded(findUsers); });

// ----------------------------------------------------------------------------------- events

// An event as the client API shows it (GET /v1/apps/{appid}/events): `type`, `created_at` in
// Unix seconds, `status` delivered | pending | dead | stored (no webhook: nothing to redeliver).
function eventRow(appid, e) {
  const state = e.status === 'delivered' ? 'ok' : e.status === 'dead' ? 'bad' : e.status === 'stored' ? '' : 'warn';
  const actions = el('td', { class: 'actions' });
  if (e.status === 'pending' || e.status === 'dead') {
    actions.append(el('button', { 'data-testid': 'event-redeliver', onclick: () => guarded(async () => {
      await api('POST', `/v1/admin/apps/${encodeURIComponent(appid)}/events/${e.id}/redeliver`);
      toast(t('queued'));
      await loadEvents();
    }) }, t('redeliver')));
  }
  const kind = (e.payload && (e.payload.Event || e.payload.MsgType)) || e.type;
  return el('tr', { 'data-testid': 'event-row' },
    el('td', {}, e.id), el('td', { 'data-testid': 'event-time' }, fmtTime(e.created_at * 1000)), el('td', {}, kind),
    el('td', { class: state, 'data-testid': 'event-state' }, t(e.status)), el('td', {}, e.attempts),
    el('td', {}, e.last_error || ''), actions);
}

async function loadEvents() {
  const appid = $('#ev-app').value;
  if (!appid) return;
  const { events } = await api('GET', `/v1/admin/apps/${encodeURIComponent(appid)}/events?limit=100`);
  $('#events').replaceChildren(...(events.length ? events.slice().reverse().map((e) => eventRow(appid, e)) : [el('tr', {}, el('td', { colSpan: 7, class: 'muted' }, t('noRows')))]));
}
$('#ev-load').addEventListener('click', () => guarded(loadEvents));

// ------------------------------------------------------------------------------------ audit

async function loadAudit() {
  const { records } = await api('GET', '/v1/admin/audit?limit=100');
  $('#audit').replaceChildren(...records.slice().reverse().map((r) => el('tr', { 'data-testid': 'audit-row' },
    el('td', {}, r.id), el('td', {}, fmtTime(r.at)), el('td', {}, r.admin), el('td', {}, r.action),
    el('td', {}, r.target), el('td', {}, r.source), el('td', {}, JSON.stringify(r.detail)))));
}

// --------------------------------------------------------------------------------------- tabs

document.querySelectorAll('#tabs button').forEach((b) => b.addEventListener('click', () => {
  document.querySelectorAll('#tabs button').forEach((x) => x.classList.toggle('active', x === b));
  document.querySelectorAll('.tab').forEach((s) => s.classList.toggle('active', s.id === `tab-${b.dataset.tab}`));
  if (b.dataset.tab === 'apps') guarded(() => loadApps(true));
  if (b.dataset.tab === 'clients') guarded(loadClients);
  if (b.dataset.tab === 'events') guarded(loadEvents);
  if (b.dataset.tab === 'audit') guarded(loadAudit);
}));

$('#lang').addEventListener('click', () => {
  lang = lang === 'zh' ? 'en' : 'zh';
  localStorage.setItem('weapp-admin-lang', lang);
  applyI18n();
  if (key()) guarded(async () => { await refreshFleet(); await loadApps(true); await loadClients(); });
});

// Token health and the fleet move on their own: look again every five seconds.
setInterval(() => {
  if (!key() || $('#main').classList.contains('hidden')) return;
  refreshFleet().catch(() => {});
  if ($('#tab-apps').classList.contains('active')) loadApps(true).catch(() => {});
}, 5000);

async function start() {
  applyI18n();
  if (key()) await guarded(enter); else showLogin();
  document.body.dataset.ready = 'true';
}
start();

// weapp-server admin console, the Payments tab: merchants (their keys are written, never
// read back), orders, refunds, the notification inbox (mismatches are alerts) with the
// notifications refused at the door, and the daily reconciliation reports. Loaded after app.js,
// whose helpers (I18N, t, $, el, api, guarded, fmtTime, toast, Unauthorized) it uses.
'use strict';

Object.assign(I18N.en, {
  tabPayments: 'Payments', payMerchants: 'Merchants', payOrders: 'Orders', payRefunds: 'Refunds',
  payNotifications: 'Notifications', payRecon: 'Reconciliation',
  mchid: 'merchant', appids: 'apps', serialNo: 'certificate serial', publicKeyId: 'public key id',
  platformCerts: 'platform certificates', notifyUrl: 'notify URL', updated: 'updated', yes: 'yes', no: 'no',
  srcConfig: 'configuration file', srcAdmin: 'admin API', edit: 'Edit', save: 'Save', cancel: 'Cancel',
  addMerchant: 'Add a merchant', editMerchant: 'Change merchant {x}',
  merchantKeysHelp: 'The private key and the APIv3 key are sealed with the data key and never shown again. When changing a merchant, leave them empty to keep the current ones.',
  privateKeyPh: 'merchant private key (apiclient_key.pem)', apiv3Ph: 'APIv3 key (32 characters)',
  publicKeyPh: 'WeChat Pay public key (pub_key.pem)', apiBasePay: 'api_base (default: WeChat Pay)',
  merchantAppsPh: 'appids it serves, comma-separated',
  merchantsUnavailable: 'This server has no merchants admin API: its merchants come from [[merchants]] in its configuration file and cannot be listed or changed here.',
  allMerchants: 'all merchants', allStates: 'all states', allStatuses: 'all statuses', allOutcomes: 'all outcomes',
  appidFilter: 'appid', outTradeNo: 'order no.', outRefundNo: 'refund no.', description: 'description',
  amount: 'amount', payer: 'payer', transactionId: 'transaction', paidAt: 'paid at', refunded: 'refunded',
  reason: 'reason', refundId: 'refund id', successTime: 'succeeded at', eventType: 'event', businessNo: 'about',
  outcome: 'outcome', deliveries: 'attempts', appliedAt: 'applied at', verifiedBy: 'verified by', details: 'Details',
  hide: 'Hide', resource: 'Decrypted resource',
  alertsBanner: '{n} notification(s) disagree with their orders (amount or app): not marked paid. Check them before anything else.',
  refusedTitle: 'Refused at the door (this instance, since it started; stored nowhere)',
  refusedNone: 'none refused', count: 'count',
  st_PENDING: 'pending (not at WeChat yet)', st_NOTPAY: 'not paid', st_SUCCESS: 'paid', st_CLOSED: 'closed',
  st_REFUND: 'refunded', st_PAYERROR: 'payment failed', st_REVOKED: 'revoked', st_USERPAYING: 'paying',
  st_PROCESSING: 'processing', st_ABNORMAL: 'abnormal',
  oc_applied: 'applied', oc_no_change: 'no change (already done)', oc_mismatch: 'MISMATCH', oc_unknown_order: 'unknown order',
  oc_deferred: 'deferred', oc_ignored: 'ignored', oc_pending: 'stored, not applied yet', oc_refused: 'refused (not authentic)',
  oc_malformed: 'malformed', oc_unknown_merchant: 'unknown merchant', oc_store_failed: 'not stored (WeChat retries)',
  billDate: 'bill date', status: 'status', billRows: 'bill rows', discrepancies: 'discrepancies', runNow: 'Reconcile now',
  reconHelp: "Each merchant's previous Beijing day is reconciled once a day against WeChat's trade bill.",
  chooseMerchant: 'Choose a merchant.', kindCol: 'kind', here: 'here', there: 'WeChat',
  k_missing_here: 'missing here', k_missing_there: 'missing at WeChat', k_amount_differs: 'amount differs',
  k_state_differs: 'state differs', noDiscrepancy: 'no discrepancy',
  reconUnavailable: 'This server has no reconciliation reports API.',
});
Object.assign(I18N.zh, {
  tabPayments: '微信支付', payMerchants: '商户', payOrders: '订单', payRefunds: '退款',
  payNotifications: '支付通知', payRecon: '对账',
  mchid: '商户号', appids: '小程序', serialNo: '证书序列号', publicKeyId: '公钥 ID',
  platformCerts: '平台证书', notifyUrl: '通知地址', updated: '更新于', yes: '是', no: '否',
  srcConfig: '配置文件', srcAdmin: '后台管理', edit: '修改', save: '保存', cancel: '取消',
  addMerchant: '添加商户', editMerchant: '修改商户 {x}',
  merchantKeysHelp: '商户私钥和 APIv3 密钥用数据密钥加密保存，之后不再显示。修改商户时留空即保留原密钥。',
  privateKeyPh: '商户 API 私钥（apiclient_key.pem）', apiv3Ph: 'APIv3 密钥（32 个字符）',
  publicKeyPh: '微信支付公钥（pub_key.pem）', apiBasePay: 'api_base（默认：微信支付）',
  merchantAppsPh: '绑定的 appid，逗号分隔',
  merchantsUnavailable: '本服务没有商户管理接口：商户来自配置文件中的 [[merchants]]，无法在此查看或修改。',
  allMerchants: '全部商户', allStates: '全部状态', allStatuses: '全部状态', allOutcomes: '全部结果',
  appidFilter: 'appid', outTradeNo: '商户订单号', outRefundNo: '商户退款单号', description: '商品描述',
  amount: '金额', payer: '付款人', transactionId: '微信支付订单号', paidAt: '支付时间', refunded: '已退款',
  reason: '退款原因', refundId: '微信退款单号', successTime: '退款成功时间', eventType: '通知类型', businessNo: '单号',
  outcome: '处理结果', deliveries: '送达次数', appliedAt: '处理时间', verifiedBy: '验签证书/公钥', details: '详情',
  hide: '收起', resource: '解密后的通知内容',
  alertsBanner: '有 {n} 条通知与订单不符（金额或小程序）：未标记为已支付。请优先核查。',
  refusedTitle: '被拒绝的通知（本实例启动以来；不保存）',
  refusedNone: '没有被拒绝的通知', count: '次数',
  st_PENDING: '待下单（尚未提交微信）', st_NOTPAY: '未支付', st_SUCCESS: '已支付', st_CLOSED: '已关闭',
  st_REFUND: '转入退款', st_PAYERROR: '支付失败', st_REVOKED: '已撤销', st_USERPAYING: '支付中',
  st_PROCESSING: '退款处理中', st_ABNORMAL: '退款异常',
  oc_applied: '已处理', oc_no_change: '无变化（已处理过）', oc_mismatch: '不一致', oc_unknown_order: '未知订单',
  oc_deferred: '暂缓', oc_ignored: '已忽略', oc_pending: '已保存，待处理', oc_refused: '已拒绝（验签失败）',
  oc_malformed: '格式错误', oc_unknown_merchant: '未知商户', oc_store_failed: '未保存（微信会重试）',
  billDate: '账单日期', status: '状态', billRows: '账单行数', discrepancies: '差异', runNow: '立即对账',
  reconHelp: '每天对每个商户的前一个北京日，用微信支付交易账单对账一次。',
  chooseMerchant: '请选择商户。', kindCol: '类型', here: '本服务', there: '微信支付',
  k_missing_here: '本服务缺少', k_missing_there: '微信支付缺少', k_amount_differs: '金额不一致',
  k_state_differs: '状态不一致', noDiscrepancy: '无差异',
  reconUnavailable: '本服务没有对账报告接口。',
});

// ------------------------------------------------------------------------------- helpers

// Like api(), but answers {status, body} for every status but 401, so that a missing
// endpoint (404 "no such route") can be told from a failure.
async function payCall(method, path, body) {
  const opts = { method, headers: { authorization: `Bearer ${key()}` } };
  if (body !== undefined) {
    opts.headers['content-type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let v;
  try { v = text ? JSON.parse(text) : {}; } catch (_) { v = { error: { message: text } }; }
  if (r.status === 401) throw new Unauthorized((v.error && v.error.message) || 'unauthorized');
  return { status: r.status, body: v };
}
const absent = (res) => res.status === 404 && res.body.error && res.body.error.message === 'no such route';
const failed = (res) => new Error((res.body.error && res.body.error.message) || `HTTP ${res.status}`);

const yuan = (fen) => (fen == null ? t('none') : `¥${(fen / 100).toFixed(2)}`);
const tr = (prefix, v) => (v == null ? t('none') : (I18N[lang][`${prefix}_${v}`] || I18N.en[`${prefix}_${v}`] ? t(`${prefix}_${v}`) : v));
const qs = (params) => {
  const p = Object.entries(params).filter(([, v]) => v !== '' && v != null)
    .map(([k, v]) => `${k}=${encodeURIComponent(v)}`);
  return p.length ? `?${p.join('&')}` : '';
};
const emptyRow = (cols) => el('tr', {}, el('td', { colSpan: cols, class: 'muted' }, t('noRows')));
const stateClass = (s) => ({ SUCCESS: 'ok', REFUND: 'ok', CLOSED: 'state-off', PAYERROR: 'bad', ABNORMAL: 'bad', REVOKED: 'state-off' }[s] || 'warn');

const pay = { merchants: null, editing: null, orders: [], ordersNext: null, refunds: [], refundsNext: null, notes: [], notesNext: null, openNote: null };

// The merchants known to the page (from the merchants API, else from the orders seen), for
// the filters' suggestions.
function mchidSuggestions(extra) {
  const ids = new Set((pay.merchants || []).map((m) => m.mchid));
  for (const o of pay.orders) ids.add(o.mchid);
  for (const m of extra || []) ids.add(m);
  $('#pay-mchids').replaceChildren(...[...ids].sort().map((m) => el('option', { value: m })));
}

// ------------------------------------------------------------------------------ merchants

function merchantRow(m) {
  const actions = el('td', { class: 'actions' });
  if (m.source === 'admin') {
    actions.append(
      el('button', { 'data-testid': 'merchant-edit', onclick: () => editMerchant(m) }, t('edit')),
      el('button', { class: 'danger', 'data-testid': 'merchant-delete', onclick: () => guarded(async () => {
        if (!window.confirm(t('confirmDelete', { x: m.mchid }))) return;
        const res = await payCall('DELETE', `/v1/admin/merchants/${encodeURIComponent(m.mchid)}`);
        if (res.status >= 300) throw failed(res);
        toast(t('deleted'));
        await loadMerchants();
      }) }, t('del')));
  }
  return el('tr', { 'data-testid': 'merchant-row', 'data-mchid': m.mchid },
    el('td', {}, m.mchid), el('td', {}, (m.appids || []).join(', ')), el('td', { class: 'mono' }, m.serial_no || ''),
    el('td', { class: 'mono' }, m.public_key_id || t('none')), el('td', {}, m.platform_certificates ? t('yes') : t('no')),
    el('td', {}, m.api_base || ''), el('td', {}, m.notify_url || ''),
    el('td', {}, m.source === 'config' ? t('srcConfig') : m.source === 'admin' ? t('srcAdmin') : (m.source || '')),
    el('td', {}, fmtTime(m.updated_at || m.created_at)), actions);
}

async function loadMerchants() {
  const res = await payCall('GET', '/v1/admin/merchants');
  const unavailable = absent(res);
  $('#pay-merchants-unavailable').classList.toggle('hidden', !unavailable);
  $('#merchant-form').classList.toggle('hidden', unavailable);
  $('#merchant-form-help').classList.toggle('hidden', unavailable);
  if (unavailable) {
    pay.merchants = null;
    $('#pay-merchants').replaceChildren(emptyRow(10));
    mchidSuggestions();
    return;
  }
  if (res.status !== 200) throw failed(res);
  pay.merchants = res.body.merchants || [];
  $('#pay-merchants').replaceChildren(...(pay.merchants.length ? pay.merchants.map(merchantRow) : [emptyRow(10)]));
  mchidSuggestions();
}

const MERCHANT_FIELDS = ['mchid', 'appids', 'serial_no', 'private_key', 'apiv3_key', 'public_key_id', 'public_key', 'api_base', 'notify_url'];

function editMerchant(m) {
  pay.editing = m ? m.mchid : null;
  for (const f of MERCHANT_FIELDS) $(`#m-${f}`).value = '';
  $('#m-platform_certificates').checked = false;
  if (m) {
    $('#m-mchid').value = m.mchid;
    $('#m-appids').value = (m.appids || []).join(', ');
    for (const f of ['serial_no', 'public_key_id', 'api_base', 'notify_url']) $(`#m-${f}`).value = m[f] || '';
    $('#m-platform_certificates').checked = !!m.platform_certificates;
  }
  $('#m-mchid').disabled = !!m;
  merchantFormLabels();
}

function merchantFormLabels() {
  $('#merchant-form-title').textContent = pay.editing ? t('editMerchant', { x: pay.editing }) : t('addMerchant');
  $('#merchant-submit').textContent = pay.editing ? t('save') : t('create');
  $('#merchant-cancel').classList.toggle('hidden', !pay.editing);
}

$('#merchant-form').addEventListener('submit', (e) => {
  e.preventDefault();
  guarded(async () => {
    const body = { appids: $('#m-appids').value.split(',').map((s) => s.trim()).filter(Boolean) };
    for (const f of ['serial_no', 'public_key_id', 'api_base', 'notify_url']) {
      const v = $(`#m-${f}`).value.trim();
      if (v) body[f] = v;
    }
    // Secrets only when typed: a change without them keeps the current ones.
    for (const f of ['private_key', 'apiv3_key', 'public_key']) {
      const v = $(`#m-${f}`).value;
      if (v.trim()) body[f] = v;
    }
    body.platform_certificates = $('#m-platform_certificates').checked;
    let res;
    if (pay.editing) {
      res = await payCall('PUT', `/v1/admin/merchants/${encodeURIComponent(pay.editing)}`, body);
    } else {
      body.mchid = $('#m-mchid').value.trim();
      res = await payCall('POST', '/v1/admin/merchants', body);
    }
    if (absent(res)) throw new Error(t('merchantsUnavailable'));
    if (res.status >= 300) throw failed(res);
    const changed = pay.editing;
    // The typed keys leave the page at once.
    editMerchant(null);
    toast(changed ? t('saved') : t('created'));
    await loadMerchants();
  });
});
$('#merchant-cancel').addEventListener('click', () => editMerchant(null));

// --------------------------------------------------------------------------------- orders

function orderRow(o) {
  return el('tr', { 'data-testid': 'pay-order-row', 'data-no': o.out_trade_no },
    el('td', {}, fmtTime(o.created_at)), el('td', {}, o.mchid), el('td', {}, o.appid),
    el('td', { class: 'mono' }, o.out_trade_no), el('td', {}, o.description),
    el('td', { 'data-testid': 'order-amount' }, yuan(o.amount)),
    el('td', { class: stateClass(o.state), 'data-testid': 'order-state', 'data-state': o.state }, tr('st', o.state)),
    el('td', { class: 'mono' }, o.transaction_id || t('none')), el('td', {}, fmtTime(o.paid_at)),
    el('td', {}, o.refunded ? yuan(o.refunded) : t('none')), el('td', { class: 'mono' }, o.openid));
}

async function loadOrders(reset) {
  if (reset) { pay.orders = []; pay.ordersNext = null; }
  const q = qs({ mchid: $('#po-mchid').value.trim(), appid: $('#po-appid').value.trim(), state: $('#po-state').value, limit: 50, after: pay.ordersNext });
  const page = await api('GET', `/v1/admin/pay/orders${q}`);
  pay.orders = pay.orders.concat(page.orders);
  pay.ordersNext = page.next_after;
  $('#pay-orders').replaceChildren(...(pay.orders.length ? pay.orders.map(orderRow) : [emptyRow(11)]));
  $('#po-more').classList.toggle('hidden', !pay.ordersNext);
  mchidSuggestions();
}

// -------------------------------------------------------------------------------- refunds

function refundRow(r) {
  return el('tr', { 'data-testid': 'pay-refund-row', 'data-no': r.out_refund_no },
    el('td', {}, fmtTime(r.created_at)), el('td', {}, r.mchid), el('td', { class: 'mono' }, r.out_refund_no),
    el('td', { class: 'mono' }, r.out_trade_no), el('td', {}, yuan(r.amount)),
    el('td', { class: stateClass(r.status), 'data-testid': 'refund-state' }, tr('st', r.status)),
    el('td', {}, r.reason || ''), el('td', { class: 'mono' }, r.refund_id || t('none')), el('td', {}, r.success_time || t('none')));
}

async function loadRefunds(reset) {
  if (reset) { pay.refunds = []; pay.refundsNext = null; }
  const q = qs({ mchid: $('#pr-mchid').value.trim(), out_trade_no: $('#pr-order').value.trim(), status: $('#pr-status').value, limit: 50, after: pay.refundsNext });
  const page = await api('GET', `/v1/admin/pay/refunds${q}`);
  pay.refunds = pay.refunds.concat(page.refunds);
  pay.refundsNext = page.next_after;
  $('#pay-refunds').replaceChildren(...(pay.refunds.length ? pay.refunds.map(refundRow) : [emptyRow(9)]));
  $('#pr-more').classList.toggle('hidden', !pay.refundsNext);
}

// -------------------------------------------------------------------------- notifications

function noteRows(n) {
  const open = pay.openNote && pay.openNote.id === n.id;
  const row = el('tr', { 'data-testid': 'pay-note-row', 'data-business': n.business_no || '', class: n.alert ? 'alert' : '' },
    el('td', {}, fmtTime(n.received_at)), el('td', {}, n.mchid), el('td', {}, n.event_type),
    el('td', { class: 'mono' }, n.business_no || t('none')),
    el('td', { class: n.alert ? 'bad' : n.outcome === 'applied' ? 'ok' : n.outcome === 'pending' ? 'warn' : '', 'data-testid': 'note-outcome', 'data-outcome': n.outcome },
      (n.alert ? '⚠ ' : '') + tr('oc', n.outcome)),
    el('td', { 'data-testid': 'note-attempts' }, n.deliveries), el('td', {}, fmtTime(n.applied_at)),
    el('td', { class: 'mono' }, n.serial),
    el('td', { class: 'actions' }, el('button', { 'data-testid': 'note-detail', onclick: () => guarded(async () => {
      if (open) { pay.openNote = null; } else {
        const d = await api('GET', `/v1/admin/pay/notifications/${n.id}`);
        pay.openNote = d;
      }
      renderNotes();
    }) }, open ? t('hide') : t('details'))));
  if (!open) return [row];
  return [row, el('tr', { class: 'detail' }, el('td', { colSpan: 9 },
    el('div', { class: 'muted' }, `${t('resource')} · ${n.notification_id}`),
    el('pre', { 'data-testid': 'note-resource' }, JSON.stringify(pay.openNote.resource, null, 2))))];
}

function renderNotes() {
  $('#pay-notes').replaceChildren(...(pay.notes.length ? pay.notes.flatMap(noteRows) : [emptyRow(9)]));
}

async function loadNotes(reset) {
  if (reset) { pay.notes = []; pay.notesNext = null; pay.openNote = null; }
  const mchid = $('#pn-mchid').value.trim();
  const q = qs({ mchid, outcome: $('#pn-outcome').value, limit: 50, after: pay.notesNext });
  const page = await api('GET', `/v1/admin/pay/notifications${q}`);
  pay.notes = pay.notes.concat(page.notifications);
  pay.notesNext = page.next_after;
  renderNotes();
  $('#pn-more').classList.toggle('hidden', !pay.notesNext);
  const refused = await api('GET', `/v1/admin/pay/notifications/refused${qs({ mchid })}`);
  $('#pay-refused').replaceChildren(...(refused.counts.length
    ? refused.counts.map((c) => el('tr', { 'data-testid': 'refused-row' }, el('td', {}, c.mchid), el('td', {}, tr('oc', c.outcome)), el('td', {}, c.count)))
    : [el('tr', {}, el('td', { colSpan: 3, class: 'muted' }, t('refusedNone')))]));
}

// Mismatches are alerts: counted on opening the tab, shown above every view.
async function loadAlerts() {
  const page = await api('GET', '/v1/admin/pay/notifications?outcome=mismatch&limit=100');
  const n = page.notifications.length;
  const banner = $('#pay-alerts');
  banner.textContent = n ? t('alertsBanner', { n: page.next_after ? `${n}+` : n }) : '';
  banner.classList.toggle('hidden', !n);
}

// ------------------------------------------------------------------------ reconciliation

function reconItems(report) {
  const items = report.items || [];
  if (!items.length) return el('div', { class: 'muted' }, t('noDiscrepancy'));
  return el('table', { 'data-testid': 'recon-items' },
    el('thead', {}, el('tr', {}, ...['kindCol', 'outTradeNo', 'outRefundNo', 'here', 'there'].map((k) => el('th', {}, t(k))))),
    el('tbody', {}, ...items.map((i) => el('tr', { 'data-testid': 'recon-item' },
      el('td', { class: 'bad' }, tr('k', i.kind)), el('td', { class: 'mono' }, i.out_trade_no || ''),
      el('td', { class: 'mono' }, i.out_refund_no || ''),
      el('td', { class: 'mono' }, i.here == null ? t('none') : JSON.stringify(i.here)),
      el('td', { class: 'mono' }, i.there == null ? t('none') : JSON.stringify(i.there))))));
}

function reconRow(mchid, r) {
  const detail = el('tr', { class: 'detail hidden' }, el('td', { colSpan: 6 }));
  const row = el('tr', { 'data-testid': 'recon-row', 'data-date': r.bill_date, class: r.discrepancies ? 'alert' : '' },
    el('td', {}, r.bill_date), el('td', {}, r.status), el('td', {}, r.bill_rows),
    el('td', { class: r.discrepancies ? 'bad' : 'ok', 'data-testid': 'recon-discrepancies' }, r.discrepancies),
    el('td', {}, fmtTime(r.created_at)),
    el('td', { class: 'actions' }, el('button', { 'data-testid': 'recon-detail', onclick: () => guarded(async () => {
      if (!detail.classList.contains('hidden')) { detail.classList.add('hidden'); return; }
      const full = await api('GET', `/v1/admin/merchants/${encodeURIComponent(mchid)}/reconciliations/${encodeURIComponent(r.bill_date)}`);
      detail.firstChild.replaceChildren(reconItems(full));
      detail.classList.remove('hidden');
    }) }, t('details'))));
  return [row, detail];
}

async function loadRecon() {
  const mchid = $('#rc-mchid').value.trim();
  const note = $('#pay-recon-unavailable');
  if (!mchid) { note.textContent = t('chooseMerchant'); note.classList.remove('hidden'); $('#pay-recon').replaceChildren(); return; }
  const res = await payCall('GET', `/v1/admin/merchants/${encodeURIComponent(mchid)}/reconciliations`);
  if (absent(res)) {
    note.textContent = t('reconUnavailable');
    note.classList.remove('hidden');
    $('#pay-recon').replaceChildren(emptyRow(6));
    return;
  }
  note.classList.add('hidden');
  if (res.status !== 200) throw failed(res);
  const reports = res.body.reports || [];
  $('#pay-recon').replaceChildren(...(reports.length ? reports.flatMap((r) => reconRow(mchid, r)) : [emptyRow(6)]));
}

$('#rc-run').addEventListener('click', () => guarded(async () => {
  const mchid = $('#rc-mchid').value.trim();
  const date = $('#rc-date').value;
  if (!mchid || !date) { toast(t('chooseMerchant'), true); return; }
  const res = await payCall('POST', `/v1/admin/merchants/${encodeURIComponent(mchid)}/reconciliations`, { bill_date: date });
  if (absent(res)) throw new Error(t('reconUnavailable'));
  if (res.status >= 300) throw failed(res);
  toast(`${res.body.bill_date || date}: ${t('discrepancies')} ${res.body.discrepancies}`);
  await loadRecon();
}));

// ---------------------------------------------------------------------------- navigation

const PAY_VIEWS = {
  merchants: () => loadMerchants(),
  orders: () => loadOrders(true),
  refunds: () => loadRefunds(true),
  notifications: () => loadNotes(true),
  reconciliations: async () => {
    if (pay.merchants === null) await loadMerchants().catch(() => {});
    if (!$('#rc-mchid').value && pay.merchants && pay.merchants.length) $('#rc-mchid').value = pay.merchants[0].mchid;
    await loadRecon();
  },
};
let payView = 'orders';

function showPayView(name) {
  payView = name;
  document.querySelectorAll('#pay-tabs button').forEach((b) => b.classList.toggle('active', b.dataset.ptab === name));
  document.querySelectorAll('.pay-view').forEach((s) => s.classList.toggle('hidden', s.id !== `pay-${name}-view`));
  return guarded(async () => { await Promise.all([PAY_VIEWS[name](), loadAlerts()]); });
}

document.querySelectorAll('#pay-tabs button').forEach((b) => b.addEventListener('click', () => showPayView(b.dataset.ptab)));
$('[data-tab="payments"]').addEventListener('click', () => showPayView(payView));
for (const [form, load] of [['#po-filters', loadOrders], ['#pr-filters', loadRefunds], ['#pn-filters', loadNotes]]) {
  $(form).addEventListener('submit', (e) => { e.preventDefault(); guarded(() => load(true)); });
}
$('#po-more').addEventListener('click', () => guarded(() => loadOrders(false)));
$('#pr-more').addEventListener('click', () => guarded(() => loadRefunds(false)));
$('#pn-more').addEventListener('click', () => guarded(() => loadNotes(false)));
$('#rc-load').addEventListener('click', () => guarded(loadRecon));

// The filters' choices, translated (rebuilt when the language changes).
function payOptions() {
  const fill = (sel, all, prefix, values) => {
    const keep = $(sel).value;
    $(sel).replaceChildren(el('option', { value: '' }, t(all)), ...values.map((v) => el('option', { value: v }, `${tr(prefix, v)} (${v})`)));
    $(sel).value = keep;
  };
  fill('#po-state', 'allStates', 'st', ['PENDING', 'NOTPAY', 'SUCCESS', 'CLOSED', 'REFUND', 'PAYERROR', 'REVOKED']);
  fill('#pr-status', 'allStatuses', 'st', ['PENDING', 'PROCESSING', 'SUCCESS', 'CLOSED', 'ABNORMAL']);
  fill('#pn-outcome', 'allOutcomes', 'oc', ['applied', 'no_change', 'mismatch', 'unknown_order', 'deferred', 'ignored', 'pending']);
  merchantFormLabels();
}

$('#lang').addEventListener('click', () => {
  payOptions();
  if (key() && $('#tab-payments').classList.contains('active')) showPayView(payView);
});

applyI18n();
payOptions();

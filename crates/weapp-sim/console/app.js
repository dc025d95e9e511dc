// weapp-sim console: a virtual phone that drives your backend like a mini program, and live
// views of tokens, traffic, pushes, faults and the clock. No framework, no build step, nothing
// from a CDN: this file is embedded in the binary.
'use strict';

const I18N = {
  en: {
    resync: 'now', resyncHelp: "Back to the wall clock, in real time. A WeChat clock ahead of your server's makes its pushes fall outside your receiver's replay window.",
    console: 'console', app: 'App', virtualTime: 'Virtual time', realTime: 'real time',
    tabPhone: 'Phone', tabTokens: 'Tokens', tabTraffic: 'Traffic', tabPushes: 'Pushes', tabFaults: 'Faults & clock',
    user: 'User', enterSession: 'Enter customer service', popupTitle: 'Allow these notifications?',
    ok: 'OK', cancel: 'Cancel', csPlaceholder: 'Write to customer service…', send: 'Send',
    storage: 'Storage (wx.setStorageSync)', notifications: 'Notifications', newUser: 'New user',
    withUnionid: 'with unionid', blocked: 'blocked', create: 'Create',
    backend: 'Your backend',
    backendHelp: 'The phone sends its codes here, like wx.request; the simulator makes the request, so no CORS is needed. {{code}}, {{appid}}, {{openid}} and {{storage.KEY}} are replaced.',
    save: 'Save', lastExchange: 'Last backend exchange', foreign: 'Classic fetch from another machine (a forgotten laptop)',
    foreignHelp: "A classic /cgi-bin/token fetch with the app's secret from somewhere else: the classic token your servers hold keeps working for 300 s, then WeChat answers 40001. A stable token is not affected.",
    allApps: 'all apps', pathContains: 'path contains', errcode: 'errcode', allKinds: 'all kinds', pause: 'pause',
    events: 'events', time: 'time', kind: 'kind', path: 'path', clickRow: 'Click a row to see its request and response.',
    pushConfig: 'Push configuration', deliveries: 'Deliveries', addFault: 'Add fault', clearFaults: 'Remove all faults',
    noUser: 'no user yet — create one', noTemplates: 'This app has no subscribe templates yet (addtemplate).',
    accept: 'accept', reject: 'reject', current: 'current', previous: 'previous', none: 'none',
    expiresIn: 'expires in', worksFor: 'works for', dead: 'no longer works', issued: 'issued',
    quota: 'quota used / left today', overlap: 'a replaced token keeps working', saved: 'saved',
    delivered: 'delivered', failed: 'not delivered', attempt: 'attempt', attempts: 'attempts', noPush: 'no push URL configured',
    noDeliveries: 'no deliveries yet', noFaults: 'no faults', remove: 'remove', subscribeMsg: 'subscribe message',
    csMsg: 'customer-service reply', noMessages: 'nothing received yet',
    tabPlatforms: 'Platforms',
    platformsHelp: 'Third-party platforms (开放平台) registered with POST /_sim/platforms: their ticket pushes, and the merchants that authorized them.',
    tabPayments: 'Payments', paymentsHelp: 'WeChat Pay merchants issued with POST /_sim/pay/merchants: their orders and states, each notification with its attempts, and refunds you can end now.',
    noPayMerchants: 'no merchant issued', verification: 'verification', publicKeyId: 'public key id', certificates: 'platform certificates',
    payOrders: 'Orders', payNotifications: 'Notifications', payRefunds: 'Refunds', noneYet: 'none yet',
    outTradeNo: 'out_trade_no', amountFen: 'amount (fen)', tradeState: 'state', payAttempts: 'attempts', delivering: 'delivering',
    lost: 'lost', gaveUp: 'gave up', refundStatus: 'status', completeRefund: 'Complete', abnormalRefund: 'Abnormal', closeRefund: 'Close',
    resend: 'Send again', deliveryOn: 'delivery on', deliveryOff: 'delivery off (lost)', toggleDelivery: 'Switch',
    noPlatforms: 'no platform registered', eventUrl: 'authorization-event URL', messageUrl: 'message URL',
    ticketPushes: 'ticket pushes', lastTicket: 'last ticket', answeredSuccess: 'last answered "success"',
    componentTokens: 'component tokens issued', pushTicket: 'Push a ticket now', merchants: 'Merchants',
    noMerchants: 'no merchant has authorized this platform', authorized: 'authorized', deauthorized: 'de-authorized',
    deauthorize: 'De-authorize', authorizeAs: 'Scan the authorization page as a merchant',
    preAuthCode: 'pre-auth code (from api_create_preauthcode)', noPreAuth: 'no open page: call api_create_preauthcode first',
    redirectUri: 'redirect_uri', funcIds: 'permission sets (comma-separated, optional)', authorize: 'Authorize',
    redirected: 'redirected to', refreshExchanged: 'refresh token exchanged', never: 'never',
    ipWhitelist: 'IP whitelist', anyIp: 'any address', options: 'options',
    optional: 'optional', csLabel: 'Message to customer service', method: 'Method', pathLabel: 'Path',
    bodyTemplate: 'Body (template)', headersJson: 'Headers (JSON)', replayWindow: 'Its push replay window (s; weapp-server: 300)',
    replayDefault: '300', kindLabel: 'Kind', detailTitle: 'Request and response',
    addFaultTitle: 'Add a fault', faultPath: 'WeChat API path', faultStatus: 'HTTP status', faultLatency: 'Latency (ms)',
    faultRate: 'Rate (0–1)', faultCount: 'Times', unlimited: 'unlimited', activeFaults: 'Active faults',
    tokensTitle: "This app's tokens at WeChat", anotherMachine: 'Another machine with the AppSecret',
    foreignStable: 'Foreign force_refresh of the stable token',
    foreignStableHelp: 'Another machine calls /cgi-bin/stable_token with force_refresh=true (a second deployment, a colleague debugging): the stable token your servers hold keeps working for 300 s, then WeChat answers 40001. At most 20 a day; within 30 s of the last one nothing changes.',
    resultTitle: 'What the other machine did',
    resultIssued: '{time}: another machine called {path} and got a new {kind} token, {token}.',
    resultSame: '{time}: another machine called {path}; WeChat answered the {kind} token in use, {token} (a forced refresh within 30 s of the last one), and retired nothing.',
    resultRetired: 'Killed: the {kind} token {token} (the one your servers hold) works until {until} — {left} from now — then WeChat answers 40001.',
    resultDead: 'Killed: the {kind} token {token} stopped working at {until}: WeChat answers 40001 to it.',
    resultNone: 'No other {kind} token was in use: nothing was killed.',
    resultAdvance: 'Advance the clock by 5 min to see it refused, and your broker recover.',
    resultStableSafe: 'Stable tokens are not affected by a classic fetch: to kill the stable token, use "Foreign force_refresh".',
    resultClassicSafe: 'Classic tokens are not affected.',
    clockWarnTitle: 'Pushes to your server will be refused as stale.',
    clockWarnText: "The simulator's clock is {offset} {dir} real time: more than the server's push replay window ({window} s{source}). weapp-server — and any receiver that checks timestamps — refuses these pushes (without telling anyone: WeChat only sees a failed delivery). Reset the clock with “now”.",
    ahead: 'ahead of', behind: 'behind', windowDefault: ", weapp-server's default", windowBackend: ', as set for this backend',
    resetClock: 'Reset the clock (now)',
    paySheetTitle: 'WeChat Pay', payee: 'Payee', payItem: 'Item', payNow: 'Pay',
    payTemplateHelp: 'Your backend places the order (/v3/pay/transactions/jsapi) and answers the five wx.requestPayment parameters — timeStamp, nonceStr, package, signType, paySign — at the top level of its JSON or under "request_payment" or "payment". Leave the path empty if the phone does not pay.',
    noPayParams: 'No wx.requestPayment parameters in the backend\'s answer: timeStamp, nonceStr, package, signType and paySign are read at the top level of its JSON or under "request_payment" or "payment".',
    payParamsFrom: 'parameters read from', payFromTop: 'the top level', unknownOrder: 'no such order at the simulator (the payment will fail)',
    payBills: 'Bills', billTrade: 'trade bill', billFund: 'fund-flow bill', billDate: 'date (Beijing)', showBill: 'Show',
    billReady: 'downloadable through /v3/bill', billNotReady: 'not downloadable through /v3/bill before {at} (so far today)',
    billEmpty: 'no money moved that day', billSummary: 'summary',
  },
  zh: {
    resync: '回到现在', resyncHelp: '回到真实时间（实时模式）。微信时钟快于你的服务器时，推送的时间戳会超出接收端的重放窗口而被拒绝。',
    console: '控制台', app: '小程序', virtualTime: '虚拟时间', realTime: '实时',
    tabPhone: '手机', tabTokens: '令牌', tabTraffic: '流量', tabPushes: '推送', tabFaults: '故障与时钟',
    user: '用户', enterSession: '进入客服会话', popupTitle: '允许发送以下消息？',
    ok: '确定', cancel: '取消', csPlaceholder: '给客服发消息…', send: '发送',
    storage: '本地存储 (wx.setStorageSync)', notifications: '通知', newUser: '新建用户',
    withUnionid: '带 unionid', blocked: '高风险用户', create: '创建',
    backend: '你的后端',
    backendHelp: '手机像 wx.request 一样把 code 发到这里；请求由模拟器发出，无需 CORS。{{code}}、{{appid}}、{{openid}} 和 {{storage.KEY}} 会被替换。',
    save: '保存', lastExchange: '最近一次后端请求', foreign: '在另一台机器上获取普通令牌（被遗忘的笔记本）',
    foreignHelp: '有人在别处用 AppSecret 调用了 /cgi-bin/token：你的服务器持有的普通令牌还能用 300 秒，之后微信返回 40001。稳定版令牌不受影响。',
    allApps: '全部小程序', pathContains: '路径包含', errcode: '错误码', allKinds: '全部类型', pause: '暂停',
    events: '条事件', time: '时间', kind: '类型', path: '路径', clickRow: '点击一行查看请求和响应。',
    pushConfig: '消息推送配置', deliveries: '推送记录', addFault: '添加故障', clearFaults: '清除全部故障',
    noUser: '还没有用户——先创建一个', noTemplates: '该小程序还没有订阅消息模板（addtemplate）。',
    accept: '允许', reject: '拒绝', current: '当前', previous: '上一个', none: '无',
    expiresIn: '剩余', worksFor: '还能用', dead: '已失效', issued: '签发于',
    quota: '今日已用 / 剩余', overlap: '被替换的令牌继续有效', saved: '已保存',
    delivered: '已送达', failed: '未送达', attempt: '次尝试', attempts: '次尝试', noPush: '未配置推送地址',
    noDeliveries: '暂无推送', noFaults: '没有故障', remove: '移除', subscribeMsg: '订阅消息',
    csMsg: '客服回复', noMessages: '暂无消息',
    tabPlatforms: '第三方平台',
    platformsHelp: '通过 POST /_sim/platforms 注册的第三方平台（开放平台）：验证票据推送，以及授权给它的商家小程序。',
    tabPayments: '支付', paymentsHelp: '通过 POST /_sim/pay/merchants 开通的微信支付商户：订单及其状态、每条通知及其重试、可立即结束的退款。',
    noPayMerchants: '尚未开通商户', verification: '验签方式', publicKeyId: '公钥 ID', certificates: '平台证书',
    payOrders: '订单', payNotifications: '通知', payRefunds: '退款', noneYet: '暂无',
    outTradeNo: '商户订单号', amountFen: '金额（分）', tradeState: '状态', payAttempts: '尝试', delivering: '投递中',
    lost: '已丢失', gaveUp: '已放弃', refundStatus: '状态', completeRefund: '退款成功', abnormalRefund: '退款异常', closeRefund: '退款关闭',
    resend: '重发', deliveryOn: '通知投递开启', deliveryOff: '通知投递关闭（丢失）', toggleDelivery: '切换',
    noPlatforms: '还没有注册第三方平台', eventUrl: '授权事件接收 URL', messageUrl: '消息与事件接收 URL',
    ticketPushes: '票据推送次数', lastTicket: '最近一次票据', answeredSuccess: '最近一次回复 "success"',
    componentTokens: '已签发的 component_access_token', pushTicket: '立即推送票据', merchants: '授权方（商家）',
    noMerchants: '还没有商家授权给这个平台', authorized: '已授权', deauthorized: '已取消授权',
    deauthorize: '取消授权', authorizeAs: '以商家身份扫码授权',
    preAuthCode: '预授权码（api_create_preauthcode）', noPreAuth: '没有打开的授权页：先调用 api_create_preauthcode',
    redirectUri: '回调地址 redirect_uri', funcIds: '权限集（逗号分隔，可选）', authorize: '确认授权',
    redirected: '已跳转到', refreshExchanged: '刷新令牌已换取', never: '从未',
    ipWhitelist: 'IP 白名单', anyIp: '不限', options: '选项',
    optional: '可选', csLabel: '发给客服的消息', method: '方法', pathLabel: '路径',
    bodyTemplate: '请求体（模板）', headersJson: '请求头（JSON）', replayWindow: '它的推送重放窗口（秒；weapp-server 默认 300）',
    replayDefault: '300', kindLabel: '类型', detailTitle: '请求与响应',
    addFaultTitle: '添加故障', faultPath: '微信接口路径', faultStatus: 'HTTP 状态码', faultLatency: '延迟（毫秒）',
    faultRate: '比例（0–1）', faultCount: '次数', unlimited: '不限', activeFaults: '生效中的故障',
    tokensTitle: '该小程序在微信的令牌', anotherMachine: '另一台持有 AppSecret 的机器',
    foreignStable: '在另一台机器上强制刷新稳定版令牌（force_refresh）',
    foreignStableHelp: '另一台机器用 force_refresh=true 调用 /cgi-bin/stable_token（第二套部署、正在调试的同事）：你的服务器持有的稳定版令牌还能用 300 秒，之后微信返回 40001。每天最多 20 次；距上次强制刷新不足 30 秒时什么也不会改变。',
    resultTitle: '另一台机器做了什么',
    resultIssued: '{time}：另一台机器调用了 {path}，拿到新的 {kind} 令牌 {token}。',
    resultSame: '{time}：另一台机器调用了 {path}；微信返回的是正在使用的 {kind} 令牌 {token}（距上次强制刷新不足 30 秒），没有令牌失效。',
    resultRetired: '被废掉的：{kind} 令牌 {token}（你的服务器持有的那个）在 {until} 前仍可用——还剩 {left}——之后微信返回 40001。',
    resultDead: '被废掉的：{kind} 令牌 {token} 已于 {until} 失效，微信对它返回 40001。',
    resultNone: '之前没有其他在用的 {kind} 令牌：没有令牌被废掉。',
    resultAdvance: '把时钟拨快 5 分钟，即可看到它被拒绝、中控随之恢复。',
    resultStableSafe: '普通令牌的获取不影响稳定版令牌：要废掉稳定版令牌，请用“强制刷新稳定版令牌”。',
    resultClassicSafe: '普通令牌不受影响。',
    clockWarnTitle: '推送将被你的服务器当作过期而拒绝。',
    clockWarnText: '模拟器的时钟比真实时间{dir} {offset}，超出了服务器的推送重放窗口（{window} 秒{source}）。weapp-server 以及任何校验时间戳的接收端都会拒绝这些推送（不会告诉任何人：微信只看到投递失败）。请点“回到现在”重置时钟。',
    ahead: '快', behind: '慢', windowDefault: '，weapp-server 默认值', windowBackend: '，按该后端的设置',
    resetClock: '重置时钟（回到现在）',
    paySheetTitle: '微信支付', payee: '收款方', payItem: '商品', payNow: '支付',
    payTemplateHelp: '你的后端下单（/v3/pay/transactions/jsapi）并返回 wx.requestPayment 的五个参数——timeStamp、nonceStr、package、signType、paySign——放在 JSON 顶层，或放在 "request_payment" 或 "payment" 下。手机不支付时路径留空。',
    noPayParams: '后端的返回中没有 wx.requestPayment 参数：timeStamp、nonceStr、package、signType、paySign 从 JSON 顶层或 "request_payment"、"payment" 下读取。',
    payParamsFrom: '参数读取自', payFromTop: '顶层', unknownOrder: '模拟器中没有这个订单（支付会失败）',
    payBills: '账单', billTrade: '交易账单', billFund: '资金账单', billDate: '日期（北京时间）', showBill: '查看',
    billReady: '可通过 /v3/bill 下载', billNotReady: '{at} 前不能通过 /v3/bill 下载（截至目前）',
    billEmpty: '当日没有资金变动', billSummary: '汇总',
  },
};

let lang = localStorage.getItem('weapp-console-lang') ||
  ((navigator.language || 'en').toLowerCase().startsWith('zh') ? 'zh' : 'en');
const t = (k) => (I18N[lang] && I18N[lang][k]) || I18N.en[k] || k;
/** `t(k)` with its `{name}` placeholders filled from `vars`. */
const tf = (k, vars) => t(k).replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));

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
  document.querySelectorAll('[data-i18n-title]').forEach((n) => { n.title = t(n.dataset.i18nTitle); });
  $('#lang').textContent = lang === 'zh' ? 'English' : '中文';
}

function toast(message, error) {
  const n = $('#toast');
  n.textContent = message;
  n.className = 'toast' + (error ? ' error' : '');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => n.classList.add('hidden'), 4000);
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.headers['content-type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const text = await r.text();
  let v;
  try { v = text ? JSON.parse(text) : {}; } catch (_) { v = text; }
  if (!r.ok) throw new Error((v && v.error) || text || r.status);
  return v;
}

const pretty = (v) => JSON.stringify(v, null, 2);

// Runs `fn` once, a moment after the last of a burst of calls (events can arrive by the
// thousand; each must not cost a request).
const coalesced = (fn, ms = 250) => {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; fn().catch(() => {}); }, ms);
  };
};
const pad = (n) => String(n).padStart(2, '0');
function fmtTime(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
function fmtSpan(ms) {
  if (ms <= 0) return '0s';
  let s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return (h ? `${h}h ` : '') + (h || m ? `${pad(m)}m ` : '') + `${pad(s)}s`;
}

const state = {
  apps: [], appid: null, openid: null, nowMs: 0, realTime: false, templates: [],
  // Seconds the simulator's clock is from the wall clock (positive: ahead).
  offsetSecs: 0,
  // The current app's backend's push replay window, when its settings say (else 300 s).
  replayWindow: null,
  // Per app: what the last foreign fetch from the console did.
  foreign: {},
};

// ------------------------------------------------------------------------------------- clock

/** weapp-server's default push replay window (`replay_window_secs`). */
const DEFAULT_REPLAY_WINDOW = 300;

async function refreshClock() {
  const c = await api('GET', '/_sim/clock');
  state.nowMs = c.now * 1000;
  state.realTime = !!c.real_time;
  state.offsetSecs = Number(c.offset_secs) || 0;
  $('#now').textContent = fmtTime(state.nowMs);
  $('#realtime').checked = state.realTime;
  renderClockWarning();
  renderTokens();
}

// A receiver refuses pushes stamped further than its replay window from its own clock; the
// simulator stamps them with its clock. Warn before they are refused, not after — when some app
// has a push URL (without one, nothing is pushed).
function renderClockWarning() {
  const win = state.replayWindow == null ? DEFAULT_REPLAY_WINDOW : state.replayWindow;
  const off = state.offsetSecs;
  const box = $('#clock-warning');
  if (win === 0 || Math.abs(off) <= win || !state.apps.some((a) => a.push)) {
    box.classList.add('hidden');
    return;
  }
  $('#clock-warning-text').textContent = tf('clockWarnText', {
    offset: fmtSpan(Math.abs(off) * 1000), dir: t(off > 0 ? 'ahead' : 'behind'), window: win,
    source: t(state.replayWindow == null ? 'windowDefault' : 'windowBackend'),
  });
  box.classList.remove('hidden');
}

document.querySelectorAll('[data-advance]').forEach((b) => b.addEventListener('click', async () => {
  await api('POST', '/_sim/clock', { advance_secs: Number(b.dataset.advance) });
  await refreshClock();
  await refreshTokens();
}));
$('#realtime').addEventListener('change', async (e) => {
  await api('POST', '/_sim/clock', { real_time: e.target.checked });
  await refreshClock();
});
async function resync() {
  await api('POST', '/_sim/clock', { resync: true });
  await refreshClock();
  await refreshTokens();
}
$('#resync').addEventListener('click', () => resync().catch((err) => toast(err.message, true)));
$('#clock-warning-reset').addEventListener('click', () => resync().catch((err) => toast(err.message, true)));

// -------------------------------------------------------------------------------------- apps

async function refreshApps() {
  const { apps } = await api('GET', '/_sim/apps');
  state.apps = apps;
  const sel = $('#app');
  const fsel = $('#f-app');
  const keepF = fsel.value;
  sel.replaceChildren(...apps.map((a) => el('option', { value: a.appid }, a.appid)));
  fsel.replaceChildren(el('option', { value: '', 'data-i18n': 'allApps' }, t('allApps')),
    ...apps.map((a) => el('option', { value: a.appid }, a.appid)));
  fsel.value = keepF;
  if (!state.appid || !apps.some((a) => a.appid === state.appid)) state.appid = apps.length ? apps[0].appid : null;
  sel.value = state.appid || '';
  renderUsers();
  renderPushConfig();
}

const currentApp = () => state.apps.find((a) => a.appid === state.appid);

$('#app').addEventListener('change', async (e) => {
  state.appid = e.target.value;
  state.openid = null;
  renderUsers();
  renderPushConfig();
  await Promise.all([loadBackend(), refreshTokens(), loadDeliveries(), refreshPhone()]);
});

// ------------------------------------------------------------------------------------- phone

function renderUsers() {
  const app = currentApp();
  const users = app ? app.users : [];
  const sel = $('#user');
  if (!state.openid || !users.some((u) => u.openid === state.openid)) state.openid = users.length ? users[0].openid : null;
  sel.replaceChildren(...users.map((u) => el('option', { value: u.openid },
    u.openid + (u.unionid ? ' · unionid' : '') + (u.blocked ? ' · blocked' : ''))));
  if (!users.length) sel.append(el('option', { value: '' }, t('noUser')));
  sel.value = state.openid || '';
  $('#phone-user').textContent = state.openid || t('noUser');
}

$('#user').addEventListener('change', async (e) => {
  state.openid = e.target.value || null;
  $('#phone-user').textContent = state.openid || t('noUser');
  await refreshPhone();
});

$('#user-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    const body = { appid: state.appid, blocked: $('#new-blocked').checked };
    const openid = $('#new-openid').value.trim();
    if (openid) body.openid = openid;
    if ($('#new-unionid').checked) body.unionid = 'o' + Math.random().toString(36).slice(2, 14) + Math.random().toString(36).slice(2, 14);
    const u = await api('POST', '/_sim/users', body);
    state.openid = u.openid;
    $('#new-openid').value = '';
    await refreshApps();
    await refreshPhone();
  } catch (err) { toast(err.message, true); }
});

async function loadBackend() {
  if (!state.appid) return;
  const { backend } = await api('GET', `/_sim/apps/${state.appid}/backend`);
  state.replayWindow = backend && backend.replay_window_secs != null ? backend.replay_window_secs : null;
  renderClockWarning();
  $('#be-replay').value = state.replayWindow == null ? '' : String(state.replayWindow);
  if (!backend) return;
  $('#be-url').value = backend.url;
  for (const a of ['login', 'phone', 'pay']) {
    // No pay request: the fields keep their suggestions, the path stays empty.
    if (!backend[a]) { if (a === 'pay') $('#be-pay-path').value = ''; continue; }
    $(`#be-${a}-method`).value = backend[a].method;
    $(`#be-${a}-path`).value = backend[a].path;
    $(`#be-${a}-body`).value = backend[a].body;
    $(`#be-${a}-headers`).value = JSON.stringify(backend[a].headers);
  }
}

$('#backend-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  try {
    const req = (a) => ({
      method: $(`#be-${a}-method`).value.trim() || 'POST',
      path: $(`#be-${a}-path`).value.trim(),
      body: $(`#be-${a}-body`).value,
      headers: JSON.parse($(`#be-${a}-headers`).value || '{}'),
    });
    const backend = { url: $('#be-url').value.trim(), login: req('login'), phone: req('phone') };
    if ($('#be-pay-path').value.trim()) backend.pay = req('pay');
    const replay = $('#be-replay').value.trim();
    if (replay !== '') backend.replay_window_secs = Number(replay);
    await api('PUT', `/_sim/apps/${state.appid}/backend`, backend);
    state.replayWindow = replay === '' ? null : Number(replay);
    renderClockWarning();
    toast(t('saved'));
  } catch (err) { toast(err.message, true); }
});

function needUser() {
  if (!state.openid) { toast(t('noUser'), true); return false; }
  return true;
}

async function backendRequest(action, code) {
  const body = { appid: state.appid, openid: state.openid, action };
  if (code !== undefined) body.code = code;
  const exchange = await api('POST', '/_sim/phone/request', body);
  $('#exchange').textContent = pretty(exchange);
  await refreshPhone();
  return exchange;
}

$('#wx-login').addEventListener('click', async () => {
  if (!needUser()) return;
  try {
    const { code } = await api('POST', '/_sim/login', { appid: state.appid, openid: state.openid });
    await backendRequest('login', code);
  } catch (err) { toast(err.message, true); }
});

$('#get-phone').addEventListener('click', async () => {
  if (!needUser()) return;
  try {
    const { code } = await api('POST', '/_sim/phone-code', { appid: state.appid, openid: state.openid });
    await backendRequest('phone', code);
  } catch (err) { toast(err.message, true); }
});

// wx.requestPayment: the backend places the order and answers the five parameters; the sheet
// shows whom and how much (looked up at the simulator by prepay_id); Pay or Cancel is what
// the user does, and the errMsg is what the mini program receives.
const payment = { params: null };

function showPayResult(text, bad) {
  const box = $('#pay-result');
  box.replaceChildren(el('span', { class: 'muted' }, 'wx.requestPayment → '), el('strong', { 'data-testid': 'pay-errmsg' }, text));
  box.className = `pay-result ${bad ? 'bad' : 'ok'}`;
}

$('#request-payment').addEventListener('click', async () => {
  if (!needUser()) return;
  $('#pay-sheet').classList.add('hidden');
  $('#pay-result').classList.add('hidden');
  try {
    const exchange = await backendRequest('pay');
    if (!exchange.payment) { showPayResult(t('noPayParams'), true); return; }
    payment.params = exchange.payment.params;
    const pkg = payment.params.package;
    let order = null;
    if (typeof pkg === 'string' && pkg.startsWith('prepay_id=')) {
      order = await api('GET', `/_sim/pay/prepay/${encodeURIComponent(pkg.slice('prepay_id='.length))}`).catch(() => null);
    }
    $('#pay-sheet-amount').textContent = order ? `¥${(order.total / 100).toFixed(2)}` : '—';
    $('#pay-sheet-merchant').textContent = order ? (order.merchant_name ? `${order.merchant_name} (${order.mchid})` : order.mchid) : t('unknownOrder');
    $('#pay-sheet-description').textContent = order ? order.description : '—';
    $('#pay-sheet-order').textContent = order ? order.out_trade_no : '—';
    const from = exchange.payment.from === 'top level' ? t('payFromTop') : exchange.payment.from;
    $('#pay-sheet-title').textContent = `${t('paySheetTitle')} · ${t('payParamsFrom')} ${from}`;
    $('#pay-sheet').classList.remove('hidden');
  } catch (err) { showPayResult(err.message, true); toast(err.message, true); }
});

async function finishPayment(action) {
  $('#pay-sheet').classList.add('hidden');
  if (!payment.params) return;
  try {
    const r = await api('POST', '/_sim/pay/request_payment', { appid: state.appid, openid: state.openid, ...payment.params, action });
    showPayResult(r.errMsg, r.errMsg !== 'requestPayment:ok');
  } catch (err) { showPayResult(err.message, true); }
  payment.params = null;
}
$('#pay-sheet-pay').addEventListener('click', () => finishPayment('pay'));
$('#pay-sheet-cancel').addEventListener('click', () => finishPayment('cancel'));

$('#subscribe').addEventListener('click', async () => {
  if (!needUser()) return;
  try {
    const { templates } = await api('GET', `/_sim/apps/${state.appid}/templates`);
    state.templates = templates.slice(0, 3);
    const list = $('#popup-list');
    if (!state.templates.length) {
      list.replaceChildren(el('div', { class: 'muted' }, t('noTemplates')));
    } else {
      list.replaceChildren(...state.templates.map((tp, i) => el('div', { class: 'row' },
        el('span', {}, tp.title),
        el('span', {},
          el('label', { class: 'inline' }, el('input', { type: 'radio', name: `tp${i}`, value: 'accept', checked: true, 'data-testid': `accept-${i}` }), t('accept')),
          ' ',
          el('label', { class: 'inline' }, el('input', { type: 'radio', name: `tp${i}`, value: 'reject', 'data-testid': `reject-${i}` }), t('reject'))))));
    }
    $('#popup').classList.remove('hidden');
  } catch (err) { toast(err.message, true); }
});

$('#popup-cancel').addEventListener('click', () => $('#popup').classList.add('hidden'));
$('#popup-ok').addEventListener('click', async () => {
  $('#popup').classList.add('hidden');
  if (!state.templates.length) return;
  const choices = state.templates.map((tp, i) => ({
    template_id: tp.priTmplId,
    accept: document.querySelector(`input[name=tp${i}]:checked`).value === 'accept',
  }));
  try {
    await api('POST', '/_sim/subscribe-popup', { appid: state.appid, openid: state.openid, choices });
  } catch (err) { toast(err.message, true); }
});

$('#cs-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  if (!needUser()) return;
  try {
    await api('POST', '/_sim/user-message', { appid: state.appid, openid: state.openid, kind: 'text', content: $('#cs-text').value });
    $('#cs-text').value = '';
  } catch (err) { toast(err.message, true); }
});

$('#enter-session').addEventListener('click', async () => {
  if (!needUser()) return;
  try {
    await api('POST', '/_sim/user-message', { appid: state.appid, openid: state.openid, kind: 'enter_session', content: 'console' });
  } catch (err) { toast(err.message, true); }
});

async function refreshPhone() {
  if (!state.appid || !state.openid) {
    $('#storage').textContent = '{}';
    $('#notifications').replaceChildren();
    return;
  }
  const q = `appid=${encodeURIComponent(state.appid)}&openid=${encodeURIComponent(state.openid)}`;
  const [{ storage }, { messages }] = await Promise.all([
    api('GET', `/_sim/phone/storage?${q}`),
    api('GET', `/_sim/messages?${q}`),
  ]);
  $('#storage').textContent = pretty(storage);
  const items = messages.slice().reverse().map((m) => {
    const kind = m.custom ? t('csMsg') : t('subscribeMsg');
    const text = m.custom
      ? (m.content && (m.content.content || m.content.title)) || m.msgtype
      : `${m.title || m.template_id}: ` + Object.entries(m.data || {}).map(([k, v]) => `${k}=${v.value}`).join(', ');
    return el('li', { 'data-testid': 'notification' }, el('div', { class: 'kind' }, kind), text);
  });
  $('#notifications').replaceChildren(...(items.length ? items : [el('li', { class: 'muted' }, t('noMessages'))]));
}

// --------------------------------------------------------------------------------- platforms

let platformView = null;
/** The last authorization made from the console, per platform: what the page redirected to. */
const platformResults = {};
async function refreshPlatforms() {
  platformView = await api('GET', '/_sim/platforms');
  renderPlatforms();
}

function renderPlatforms() {
  const box = $('#platforms');
  if (!platformView) { box.replaceChildren(); return; }
  if (!platformView.platforms.length) {
    box.replaceChildren(el('p', { class: 'muted' }, t('noPlatforms')));
    return;
  }
  const secs = (s) => (s ? fmtTime(s * 1000) : t('never'));
  box.replaceChildren(...platformView.platforms.map((p) => {
    const id = p.component_appid;
    const pushBtn = el('button', { 'data-testid': `push-ticket-${id}` }, t('pushTicket'));
    pushBtn.addEventListener('click', async () => {
      try {
        const r = await api('POST', `/_sim/platforms/${id}/ticket`);
        toast(r.push ? `${t('pushTicket')}: ${r.push.delivered ? t('delivered') : t('failed')}` : t('pushTicket'));
        await refreshPlatforms();
      } catch (err) { toast(String(err.message || err), true); }
    });
    const merchants = p.authorizers.length
      ? el('table', { class: 'merchants', 'data-testid': `merchants-${id}` },
        ...p.authorizers.map((a) => {
          const row = el('tr', { 'data-testid': `merchant-${a.authorizer_appid}` },
            el('td', {}, a.authorizer_appid),
            el('td', { class: a.authorized ? 'ok' : 'bad', 'data-testid': 'merchant-status' }, a.authorized ? t('authorized') : t('deauthorized')),
            el('td', {}, (a.func_ids || []).join(', ')),
            el('td', {}, secs(a.auth_time)),
            el('td', {}, `${t('refreshExchanged')}: ${a.refresh_token_exchanged ? '✓' : '—'}`),
            el('td', { 'data-testid': 'merchant-options' }, a.options
              ? `${t('options')}: ${Object.entries(a.options).map(([k, v]) => `${k}=${v}`).join(', ')}` : ''));
          if (a.authorized) {
            const b = el('button', { 'data-testid': `deauthorize-${a.authorizer_appid}` }, t('deauthorize'));
            b.addEventListener('click', async () => {
              try {
                await api('POST', `/_sim/platforms/${id}/deauthorize`, { authorizer_appid: a.authorizer_appid });
                await refreshPlatforms();
              } catch (err) { toast(String(err.message || err), true); }
            });
            row.append(el('td', {}, b));
          } else {
            row.append(el('td', {}));
          }
          return row;
        }))
      : el('p', { class: 'muted' }, t('noMerchants'));
    // The merchant's side of the authorization page.
    const codes = p.pending_pre_auth_codes || [];
    const form = el('form', { class: 'grid-form', 'data-testid': `authorize-form-${id}` });
    const codeSel = el('select', { 'data-testid': 'authorize-code' },
      ...codes.map((c) => el('option', { value: c }, c.length > 28 ? `${c.slice(0, 28)}…` : c)));
    const appSel = el('select', { 'data-testid': 'authorize-app' },
      ...state.apps.map((a) => el('option', { value: a.appid }, a.appid)));
    const redirect = el('input', { 'data-testid': 'authorize-redirect', value: 'https://example.com/authorized', placeholder: t('redirectUri') });
    const funcs = el('input', { 'data-testid': 'authorize-funcs', placeholder: t('funcIds') });
    const submit = el('button', { type: 'submit', 'data-testid': 'authorize-submit' }, t('authorize'));
    const result = el('div', { class: 'muted', 'data-testid': 'authorize-result' }, platformResults[id] || '');
    if (!codes.length) submit.disabled = true;
    form.append(el('label', {}, t('preAuthCode'), codeSel), el('label', {}, t('app'), appSel),
      el('label', {}, t('redirectUri'), redirect), el('label', {}, t('funcIds'), funcs), submit);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const body = { pre_auth_code: codeSel.value, authorizer_appid: appSel.value, redirect_uri: redirect.value };
      const ids = funcs.value.split(',').map((x) => Number(x.trim())).filter((x) => Number.isInteger(x) && x > 0);
      if (ids.length) body.func_ids = ids;
      try {
        const r = await api('POST', `/_sim/platforms/${id}/authorize`, body);
        platformResults[id] = `${r.event} · ${t('redirected')} ${r.redirect}`;
        await refreshPlatforms();
      } catch (err) { toast(String(err.message || err), true); }
    });
    return el('div', { class: 'card', 'data-testid': `platform-${id}` },
      el('h4', {}, id),
      el('div', {}, `${t('eventUrl')}: ${p.event_url || t('none')}`),
      el('div', {}, `${t('messageUrl')}: ${p.message_url || t('none')}`),
      el('div', { 'data-testid': 'ip-whitelist' }, `${t('ipWhitelist')}: ${p.ip_whitelist ? (p.ip_whitelist.join(', ') || t('none')) : t('anyIp')}`),
      el('div', { 'data-testid': 'ticket-stats' },
        `${t('ticketPushes')}: ${p.ticket_pushes} · ${t('lastTicket')}: ${secs(p.last_ticket_at)} · ${t('answeredSuccess')}: ${secs(p.last_ticket_answered_success_at)} · ${t('componentTokens')}: ${p.component_tokens_issued}`),
      pushBtn,
      el('h4', {}, t('merchants')), merchants,
      el('h4', {}, t('authorizeAs')), codes.length ? form : el('p', { class: 'muted' }, t('noPreAuth')), result);
  }));
}

// ------------------------------------------------------------------------------------ tokens

let tokenView = null;
async function refreshTokens() {
  if (!state.appid) return;
  tokenView = await api('GET', `/_sim/apps/${state.appid}/tokens`);
  renderTokens();
}

function tokenLine(label, tk, now) {
  if (!tk) return el('div', { class: 'muted' }, `${label}: ${t('none')}`);
  const until = tk.valid_until ? Math.min(tk.valid_until, tk.expires_at) : tk.expires_at;
  const left = until - now;
  const status = !tk.works ? el('span', { class: 'bad' }, t('dead'))
    : el('span', { class: 'countdown', 'data-testid': 'countdown' },
      `${tk.valid_until ? t('worksFor') : t('expiresIn')} ${fmtSpan(left)}`);
  return el('div', {}, el('strong', {}, `${label}: `), el('span', { class: 'tok' }, tk.access_token), ' · ',
    `${t('issued')} ${fmtTime(tk.issued_at)} · `, status);
}

function renderTokens() {
  const box = $('#tokens');
  if (!tokenView) { box.replaceChildren(); return; }
  const now = state.nowMs || tokenView.now;
  const card = (kind, title, quota) => el('div', { class: 'card', 'data-testid': `tokens-${kind}` },
    el('h4', {}, title),
    tokenLine(t('current'), tokenView[kind].current, now),
    tokenLine(t('previous'), tokenView[kind].previous, now),
    el('div', { class: 'muted' }, `${t('quota')}: ${quota.used} / ${quota.left}`));
  box.replaceChildren(el('div', { class: 'tokens-grid' },
    card('classic', 'classic · /cgi-bin/token', tokenView.quota.classic),
    card('stable', 'stable · /cgi-bin/stable_token', tokenView.quota.stable)),
  el('p', { class: 'muted' }, `${t('overlap')}: ${tokenView.overlap_secs}s · stable force: ${tokenView.quota.stable_force.used} / ${tokenView.quota.stable_force.left}`));
  renderForeignResult();
}

// What the last foreign fetch of this app did: which token it killed and when that token stops
// working (counting down on the simulator's clock).
function renderForeignResult() {
  const box = $('#foreign-result');
  const r = state.foreign[state.appid];
  if (!r) { box.classList.add('hidden'); return; }
  const now = state.nowMs || r.now;
  const kind = r.token_kind;
  const lines = [tf(r.renewed ? 'resultIssued' : 'resultSame',
    { time: fmtTime(r.now), path: r.path, kind, token: r.access_token })];
  const retired = r.retired.map((x) => {
    const vars = { kind, token: x.access_token, until: fmtTime(x.valid_until), left: fmtSpan(x.valid_until - now) };
    return x.valid_until > now ? tf('resultRetired', vars) : tf('resultDead', vars);
  });
  lines.push(...(retired.length ? retired : [tf('resultNone', { kind })]));
  if (r.retired.some((x) => x.valid_until > now)) lines.push(t('resultAdvance'));
  lines.push(t(kind === 'classic' ? 'resultStableSafe' : 'resultClassicSafe'));
  $('#foreign-result-text').replaceChildren(...lines.map((l, i) => el('div', { 'data-testid': `foreign-line-${i}` }, l)));
  box.classList.remove('hidden');
}

async function foreignFetch(kind) {
  try {
    const appid = state.appid;
    state.foreign[appid] = await api('POST', `/_sim/apps/${appid}/foreign-token`, { kind });
    await refreshTokens();
  } catch (err) { toast(err.message, true); }
}
$('#foreign').addEventListener('click', () => foreignFetch('classic'));
$('#foreign-stable').addEventListener('click', () => foreignFetch('stable_force'));

// ----------------------------------------------------------------------------------- traffic

const MAX_ROWS = 1000;
const traffic = { pending: [], all: [], byId: new Map(), scheduled: false, selected: null, count: 0 };

function filters() {
  return {
    app: $('#f-app').value, path: $('#f-path').value.trim(),
    errcode: $('#f-errcode').value.trim(), kind: $('#f-kind').value,
  };
}

function keeps(e, f) {
  return (!f.app || e.appid === f.app) && (!f.path || (e.path || '').includes(f.path))
    && (!f.errcode || String(e.errcode) === f.errcode) && (!f.kind || e.kind === f.kind);
}

function row(e) {
  const tr = el('tr', { class: e.errcode ? 'err' : '', 'data-id': String(e.id) },
    el('td', {}, e.id), el('td', {}, fmtTime(e.at).slice(11)), el('td', {}, e.kind), el('td', {}, e.appid || ''),
    el('td', {}, e.path || (e.detail && e.detail.action) || ''), el('td', {}, e.errcode || ''), el('td', {}, e.latency_ms != null ? e.latency_ms : ''));
  return tr;
}

// Events are buffered and drawn once per animation frame, in one fragment, so a flood (a
// thousand a second) costs one layout per frame and the table never holds more than MAX_ROWS.
function flushTraffic() {
  traffic.scheduled = false;
  if ($('#f-pause').checked || !traffic.pending.length) return;
  const f = filters();
  const batch = traffic.pending.splice(0).filter((e) => keeps(e, f)).slice(-MAX_ROWS);
  const body = $('#traffic');
  const frag = document.createDocumentFragment();
  for (let i = batch.length - 1; i >= 0; i--) frag.append(row(batch[i]));
  body.prepend(frag);
  while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
  $('#traffic-count').textContent = String(traffic.count);
}

function scheduleTraffic() {
  if (!traffic.scheduled) { traffic.scheduled = true; requestAnimationFrame(flushTraffic); }
}

function redrawTraffic() {
  const f = filters();
  const shown = traffic.all.filter((e) => keeps(e, f)).slice(-MAX_ROWS);
  const frag = document.createDocumentFragment();
  for (let i = shown.length - 1; i >= 0; i--) frag.append(row(shown[i]));
  $('#traffic').replaceChildren(frag);
  traffic.pending = [];
}

['#f-app', '#f-kind'].forEach((s) => $(s).addEventListener('change', redrawTraffic));
['#f-path', '#f-errcode'].forEach((s) => $(s).addEventListener('input', redrawTraffic));
$('#f-pause').addEventListener('change', (e) => { if (!e.target.checked) redrawTraffic(); });

$('#traffic').addEventListener('click', (e) => {
  const tr = e.target.closest('tr');
  if (!tr) return;
  const ev = traffic.byId.get(Number(tr.dataset.id));
  if (!ev) return;
  document.querySelectorAll('#traffic tr.selected').forEach((n) => n.classList.remove('selected'));
  tr.classList.add('selected');
  $('#traffic-detail').textContent = pretty(ev);
});

// ------------------------------------------------------------------------------------ pushes

function renderPushConfig() {
  const app = currentApp();
  $('#push-config').textContent = app && app.push ? pretty(app.push) : t('noPush');
}

const deliveries = [];
function deliveryItem(e) {
  const d = e.detail || {};
  const msg = d.message || {};
  const ok = d.delivered;
  const attempts = (d.attempts || []).map((a) => el('li', {},
    `HTTP ${a.status != null ? a.status : '—'} · ${a.elapsed_ms} ms · ${a.body != null ? a.body : (a.error || '')}`));
  return el('li', { 'data-testid': 'delivery' },
    el('div', {}, el('strong', { class: ok ? 'ok' : 'bad' }, ok ? t('delivered') : t('failed')), ' · ',
      fmtTime(e.at), ' · ', msg.MsgType === 'event' ? `event ${msg.Event}` : (msg.MsgType || ''),
      msg.Content ? ` · “${msg.Content}”` : '', ` · ${(d.attempts || []).length} ${t((d.attempts || []).length === 1 ? 'attempt' : 'attempts')}`),
    el('ul', {}, ...attempts));
}

function renderDeliveries() {
  const mine = deliveries.filter((e) => e.appid === state.appid).slice(-100).reverse();
  $('#deliveries').replaceChildren(...(mine.length ? mine.map(deliveryItem) : [el('li', { class: 'muted' }, t('noDeliveries'))]));
}

async function loadDeliveries() { renderDeliveries(); }

// ------------------------------------------------------------------------------------ faults

async function refreshFaults() {
  const { faults } = await api('GET', '/_sim/faults');
  const describe = (f) => [f.path, f.errcode != null ? `errcode ${f.errcode}` : '', f.http_status != null ? `HTTP ${f.http_status}` : '',
    f.latency_ms != null ? `${f.latency_ms} ms` : '', f.body != null ? 'body' : '', f.rate != null ? `rate ${f.rate}` : '',
    f.count != null ? `×${f.count}` : ''].filter(Boolean).join(' ');
  $('#faults').replaceChildren(...(faults.length ? faults.map((f) => el('li', { 'data-testid': 'fault' },
    el('span', {}, describe(f)), ' ',
    el('button', { class: 'small', 'data-testid': 'fault-remove', onclick: async () => {
      try { await api('DELETE', `/_sim/faults/${f.id}`); } catch (err) { toast(err.message, true); }
      await refreshFaults();
    } }, t('remove'))))
    : [el('li', { class: 'muted' }, t('noFaults'))]));
}

$('#fault-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const num = (s) => ($(s).value.trim() === '' ? undefined : Number($(s).value));
  try {
    await api('POST', '/_sim/faults', {
      path: $('#fault-path').value.trim(), errcode: num('#fault-errcode'), http_status: num('#fault-status'),
      latency_ms: num('#fault-latency'), rate: num('#fault-rate'), count: num('#fault-count'),
    });
    await refreshFaults();
  } catch (err) { toast(err.message, true); }
});
$('#faults-clear').addEventListener('click', async () => { await api('DELETE', '/_sim/faults'); await refreshFaults(); });

// --------------------------------------------------------------------------------- payments

let paymentsView = null;
/** Per merchant: the bill form's choices and the last bill shown. */
const payBills = {};
const beijingToday = () => new Date((state.nowMs || Date.now()) + 8 * 3600 * 1000).toISOString().slice(0, 10);

function billSection(id) {
  const b = payBills[id] || (payBills[id] = { date: beijingToday(), kind: 'trade', bill: null });
  const date = el('input', { type: 'date', value: b.date, 'data-testid': `bill-date-${id}` });
  date.addEventListener('change', () => { b.date = date.value; });
  const kind = el('select', { 'data-testid': `bill-kind-${id}` },
    el('option', { value: 'trade' }, t('billTrade')), el('option', { value: 'fundflow' }, t('billFund')));
  kind.value = b.kind;
  kind.addEventListener('change', () => { b.kind = kind.value; });
  const show = el('button', { type: 'submit', 'data-testid': `bill-show-${id}` }, t('showBill'));
  const form = el('form', { class: 'bills-form', 'data-testid': `bill-form-${id}` },
    el('label', { class: 'field' }, el('span', {}, t('billDate')), date),
    el('label', { class: 'field' }, el('span', {}, t('kind')), kind), show);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      b.bill = await api('GET', `/_sim/pay/merchants/${id}/bills?kind=${encodeURIComponent(b.kind)}&bill_date=${encodeURIComponent(b.date)}`);
      renderPayments();
    } catch (err) { toast(String(err.message || err), true); }
  });
  const parts = [form];
  const bill = b.bill;
  if (bill) {
    parts.push(el('div', { 'data-testid': `bill-${id}` },
      el('div', { 'data-testid': 'bill-title' }, `${bill.kind === 'trade' ? t('billTrade') : t('billFund')} · ${bill.bill_date} · `,
        el('span', { class: bill.ready ? 'ok' : 'warn', 'data-testid': 'bill-ready' }, bill.ready ? t('billReady') : tf('billNotReady', { at: bill.ready_at }))),
      el('div', {}, `${bill.hash_type}: `, el('span', { class: 'hash', 'data-testid': 'bill-hash' }, bill.hash_value)),
      el('div', { 'data-testid': 'bill-summary' }, `${t('billSummary')}: ` + bill.summary_columns.map((c, i) => `${c} ${bill.summary[i]}`).join(' · ')),
      bill.rows.length
        ? el('div', { class: 'bill-wrap' }, el('table', { 'data-testid': 'bill-rows' },
          el('tr', {}, ...bill.columns.map((c) => el('th', {}, c))),
          ...bill.rows.map((r) => el('tr', { 'data-testid': 'bill-row' }, ...r.map((v) => el('td', {}, v))))))
        : el('p', { class: 'muted', 'data-testid': 'bill-rows' }, t('billEmpty'))));
  }
  return parts;
}
async function refreshPayments() {
  const { merchants } = await api('GET', '/_sim/pay/merchants');
  paymentsView = await Promise.all(merchants.map(async (m) => {
    const base = `/_sim/pay/merchants/${m.mchid}`;
    const [o, n, r] = await Promise.all([api('GET', `${base}/orders`), api('GET', `${base}/notifications`), api('GET', `${base}/refunds`)]);
    return { m, orders: o.orders, notifications: n.notifications, refunds: r.refunds };
  }));
  renderPayments();
}

function renderPayments() {
  const box = $('#payments');
  if (!paymentsView) { box.replaceChildren(); return; }
  if (!paymentsView.length) { box.replaceChildren(el('p', { class: 'muted' }, t('noPayMerchants'))); return; }
  const act = (label, testid, fn) => {
    const b = el('button', { 'data-testid': testid }, label);
    b.addEventListener('click', async () => {
      try { await fn(); await refreshPayments(); } catch (err) { toast(String(err.message || err), true); }
    });
    return b;
  };
  const table = (head, rows, testid) => (rows.length
    ? el('table', { class: 'merchants', 'data-testid': testid }, el('tr', {}, ...head.map((h) => el('th', {}, h))), ...rows)
    : el('p', { class: 'muted', 'data-testid': testid }, t('noneYet')));
  box.replaceChildren(...paymentsView.map(({ m, orders, notifications, refunds }) => {
    const id = m.mchid;
    const orderRows = orders.map((o) => el('tr', { 'data-testid': `order-${o.out_trade_no}` },
      el('td', {}, o.out_trade_no), el('td', {}, String(o.total)),
      el('td', { class: o.trade_state === 'SUCCESS' ? 'ok' : (o.trade_state === 'NOTPAY' ? '' : 'bad'), 'data-testid': 'trade-state' }, o.trade_state),
      el('td', {}, o.transaction_id || ''), el('td', {}, o.refunded ? `-${o.refunded}` : ''),
      el('td', {}, o.transaction_id ? act(t('resend'), `resend-${o.out_trade_no}`, () => api('POST', `/_sim/pay/merchants/${id}/orders/${o.out_trade_no}/notify`)) : '')));
    const noteRows = notifications.map((n) => {
      const status = n.delivered ? t('delivered') : n.lost ? t('lost') : n.gave_up ? t('gaveUp') : t('delivering');
      const attempts = n.attempts.map((a) => `${a.status || a.error || '—'} @ ${fmtTime(a.at)}`).join(' · ');
      return el('tr', { 'data-testid': `notification-${n.seq}` },
        el('td', {}, fmtTime(n.created)), el('td', {}, n.event_type + (n.probe ? ' (probe)' : '') + (n.duplicate_of !== null && n.duplicate_of !== undefined && !n.probe ? ' (dup)' : '')),
        el('td', {}, n.business_no), el('td', { class: n.delivered ? 'ok' : 'bad', 'data-testid': 'notification-status' }, status),
        el('td', { 'data-testid': 'notification-attempts' }, `${n.attempts.length}: ${attempts}`));
    });
    const refundRows = refunds.map((r) => el('tr', { 'data-testid': `refund-${r.out_refund_no}` },
      el('td', {}, r.out_refund_no), el('td', {}, r.out_trade_no), el('td', {}, String(r.amount.refund)),
      el('td', { 'data-testid': 'refund-status', class: r.status === 'SUCCESS' ? 'ok' : (r.status === 'PROCESSING' ? '' : 'bad') }, r.status),
      el('td', {}, ...(r.status === 'PROCESSING'
        ? [['SUCCESS', 'completeRefund', 'complete'], ['ABNORMAL', 'abnormalRefund', 'abnormal'], ['CLOSED', 'closeRefund', 'close']]
          .map(([status, label, tid]) => act(t(label), `${tid}-${r.out_refund_no}`, () => api('POST', `/_sim/pay/refunds/${r.out_refund_no}`, { status, mchid: id })))
        : []))));
    const certs = (m.platform_certificates || []).map((c) => `${c.serial_no.slice(0, 12)}…${c.in_use ? ' ✓' : ''}`).join(', ');
    return el('div', { class: 'card', 'data-testid': `pay-merchant-${id}` },
      el('h4', {}, m.name ? `${m.name} · ${id}` : id),
      el('div', {}, `${t('verification')}: ${m.verification}${m.migration ? ` (${m.migration.notify_percent}%)` : ''}`),
      el('div', {}, `${t('publicKeyId')}: ${m.wechatpay_public_key_id || t('none')} · ${t('certificates')}: ${certs || t('none')}`),
      el('div', { 'data-testid': 'pay-delivery' }, `${m.deliver ? t('deliveryOn') : t('deliveryOff')} `,
        act(t('toggleDelivery'), `toggle-delivery-${id}`, () => api('PUT', `/_sim/pay/merchants/${id}/notifications`, { deliver: !m.deliver }))),
      el('h4', {}, t('payOrders')), table([t('outTradeNo'), t('amountFen'), t('tradeState'), 'transaction_id', '', ''], orderRows, `pay-orders-${id}`),
      el('h4', {}, t('payNotifications')), table([t('time'), 'event_type', 'no', t('tradeState'), t('payAttempts')], noteRows, `pay-notifications-${id}`),
      el('h4', {}, t('payRefunds')), table(['out_refund_no', t('outTradeNo'), t('amountFen'), t('refundStatus'), ''], refundRows, `pay-refunds-${id}`),
      el('h4', {}, t('payBills')), ...billSection(id));
  }));
}

// ------------------------------------------------------------------------------------ events

function onEvent(e) {
  traffic.count += 1;
  traffic.all.push(e);
  traffic.byId.set(e.id, e);
  if (traffic.all.length > 5 * MAX_ROWS) {
    for (const old of traffic.all.splice(0, MAX_ROWS)) traffic.byId.delete(old.id);
  }
  traffic.pending.push(e);
  // Paused, or in a background tab (no animation frames), only the newest rows are kept.
  if (traffic.pending.length > 2 * MAX_ROWS) traffic.pending.splice(0, traffic.pending.length - MAX_ROWS);
  scheduleTraffic();
  switch (e.kind) {
    case 'push':
      deliveries.push(e);
      if (deliveries.length > 1000) deliveries.splice(0, 500);
      if (e.appid === state.appid) renderDeliveries();
      break;
    case 'message':
      if (e.appid === state.appid && e.openid === state.openid) later.phone();
      break;
    case 'token_issued': case 'token_retired': case 'foreign_fetch':
      if (e.appid === state.appid) later.tokens();
      break;
    case 'clock':
      later.clock();
      break;
    case 'fault_added': case 'fault_removed': case 'faults_cleared':
      later.faults();
      break;
    case 'platform_push': case 'platform_authorized': case 'component_token_issued':
    case 'platform_whitelist': case 'authorizer_option_set':
      later.platforms();
      break;
    case 'pay_merchant': case 'pay_notify': case 'pay_request_payment': case 'pay_refund_ended':
    case 'pay_certificate_rotated': case 'pay_migration':
      later.payments();
      break;
    case 'call':
      if (e.path && e.path.startsWith('/v3/')) later.payments();
      break;
    case 'code_issued':
      if (e.appid === state.appid && !(currentApp() || { users: [] }).users.some((u) => u.openid === e.openid)) later.apps();
      break;
    default:
  }
}

const later = {
  phone: coalesced(() => refreshPhone()),
  tokens: coalesced(() => refreshTokens()),
  clock: coalesced(() => refreshClock()),
  faults: coalesced(() => refreshFaults()),
  apps: coalesced(() => refreshApps()),
  platforms: coalesced(() => refreshPlatforms()),
  payments: coalesced(() => refreshPayments()),
};

function connectEvents() {
  const source = new EventSource('/_sim/events/stream?after=0');
  source.onmessage = (m) => { try { onEvent(JSON.parse(m.data)); } catch (_) { /* keep going */ } };
  return source;
}

// -------------------------------------------------------------------------------------- tabs

document.querySelectorAll('#tabs button').forEach((b) => b.addEventListener('click', () => {
  document.querySelectorAll('#tabs button').forEach((x) => x.classList.toggle('active', x === b));
  document.querySelectorAll('.tab').forEach((s) => s.classList.toggle('active', s.id === `tab-${b.dataset.tab}`));
  if (b.dataset.tab === 'traffic') redrawTraffic();
  if (b.dataset.tab === 'tokens') refreshTokens().catch(() => {});
  if (b.dataset.tab === 'faults') refreshFaults().catch(() => {});
  if (b.dataset.tab === 'pushes') renderDeliveries();
  if (b.dataset.tab === 'platforms') refreshPlatforms().catch(() => {});
  if (b.dataset.tab === 'payments') refreshPayments().catch(() => {});
}));

$('#lang').addEventListener('click', () => {
  lang = lang === 'zh' ? 'en' : 'zh';
  localStorage.setItem('weapp-console-lang', lang);
  applyI18n();
  renderUsers();
  renderTokens();
  renderClockWarning();
  renderDeliveries();
  refreshFaults().catch(() => {});
  refreshPhone().catch(() => {});
  renderPlatforms();
  renderPayments();
});

async function start() {
  applyI18n();
  await refreshApps();
  await Promise.all([refreshClock(), loadBackend(), refreshTokens(), refreshFaults(), refreshPhone()]);
  renderDeliveries();
  connectEvents();
  // The clock moves on its own in real time; countdowns follow it.
  setInterval(() => { refreshClock().catch(() => {}); }, 1000);
  document.body.dataset.ready = 'true';
}

start().catch((err) => toast(String(err.message || err), true));

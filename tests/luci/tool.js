#!/usr/bin/env node
// Helpers for tests/luci.rs (Node.js, no packages needed).
//
//   tool.js static                       menu, ACL, plugins, views and .pot agree
//   tool.js page SCENARIO OUT.html       writes a harness page (see SCENARIOS)
//   tool.js verify SCENARIO DOM.html     checks what chromium --dump-dom saw
//   tool.js ucode-node PLUGIN            runs the ucode plugin's getStatus with
//                                        Node.js stand-ins for ucode builtins
//   tool.js pot                          prints the translation template
//   tool.js answer JSON EXPECT           checks a getStatus answer
//
// Paths are relative to the repository root, which is two levels up.

'use strict';

const fs = require('fs');
const path = require('path');
const child = require('child_process');

const ROOT = path.resolve(__dirname, '..', '..');
const PKG = path.join(ROOT, 'openwrt', 'luci-app-pepwrt');
const VIEWS = path.join(PKG, 'htdocs', 'luci-static', 'resources', 'view');
const HERE = __dirname;

function read(p) {
	return fs.readFileSync(p, 'utf8');
}

function fail(msg) {
	console.error('FAIL: ' + msg);
	process.exitCode = 1;
}

function expect(cond, msg) {
	if (!cond)
		fail(msg);
	return cond;
}

/* Translatable strings: _('...') with literals joined by +. */

const LIT = `(?:'(?:[^'\\\\\\n]|\\\\.)*'|"(?:[^"\\\\\\n]|\\\\.)*")`;
const CALL = new RegExp(`\\b_\\(\\s*(${LIT}(?:\\s*\\+\\s*${LIT})*)\\s*[,)]`, 'g');

function literalValue(lit) {
	// Our own source: a JS string literal evaluates to itself.
	return Function('"use strict"; return (' + lit + ');')();
}

function messages(file) {
	const text = read(file), out = [];
	let m;

	while ((m = CALL.exec(text)) != null) {
		const line = text.substring(0, m.index).split('\n').length;
		const value = m[1].match(new RegExp(LIT, 'g')).map(literalValue).join('');
		out.push({ msgid: value, where: path.relative(PKG, file) + ':' + line });
	}

	return out;
}

function viewFiles() {
	return fs.readdirSync(path.join(VIEWS, 'pepwrt')).filter(f => f.endsWith('.js')).sort()
		.map(f => path.join(VIEWS, 'pepwrt', f));
}

function potEscape(s) {
	return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

const MENU = path.join(PKG, 'root/usr/share/luci/menu.d/luci-app-pepwrt.json');

// Every translatable string: the views' _() calls and the menu titles.
function allMessages() {
	const menu = JSON.parse(read(MENU));

	return viewFiles().flatMap(messages).concat(Object.values(menu).map(e => ({
		msgid: e.title, where: path.relative(PKG, MENU)
	})));
}

function pot() {
	const seen = new Map();

	allMessages().forEach(m => {
		if (!seen.has(m.msgid))
			seen.set(m.msgid, []);
		if (!seen.get(m.msgid).includes(m.where))
			seen.get(m.msgid).push(m.where);
	});

	let out = 'msgid ""\nmsgstr "Content-Type: text/plain; charset=UTF-8"\n';

	for (const [ msgid, where ] of seen)
		out += '\n#: ' + where.join(' ') + '\nmsgid "' + potEscape(msgid) + '"\nmsgstr ""\n';

	return out;
}

function potMsgids(text) {
	const ids = [];
	const re = /^msgid "((?:[^"\\]|\\.)*)"\n((?:"(?:[^"\\]|\\.)*"\n)*)/gm;
	let m;

	while ((m = re.exec(text)) != null) {
		let s = m[1];
		(m[2].match(/"((?:[^"\\]|\\.)*)"/g) || []).forEach(x => { s += x.slice(1, -1); });
		ids.push(JSON.parse('"' + s + '"'));
	}

	return ids.filter(id => id !== '');
}

/* UCI option names: from the packaging helper's default config when it
   exists (openwrt/pepwrt/**), else from the fixture that follows the
   documented option list. */

function uciOptionNames() {
	const found = [];

	(function walk(dir) {
		if (!fs.existsSync(dir))
			return;
		for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
			const p = path.join(dir, e.name);
			if (e.isDirectory())
				walk(p);
			else if (/^config pepwrt\b/m.test(read(p)) && !/\.(sh|json|md)$/.test(e.name) && !/^#!/.test(read(p)))
				found.push(p);
		}
	})(path.join(ROOT, 'openwrt', 'pepwrt'));

	if (found.length) {
		const names = [];
		let section = null;

		read(found[0]).split('\n').forEach(line => {
			let m;
			if ((m = line.match(/^\s*config\s+\S+\s+'?([\w]+)'?/)) != null)
				section = m[1];
			else if ((m = line.match(/^\s*(?:option|list)\s+(\w+)/)) != null && section)
				names.push(section + '.' + m[1]);
		});

		return { source: path.relative(ROOT, found[0]), names: [ ...new Set(names) ] };
	}

	const uci = JSON.parse(read(path.join(HERE, 'fixtures', 'pepwrt.uci.json'))).pepwrt;
	const names = [];

	Object.keys(uci).forEach(sid => Object.keys(uci[sid]).filter(k => k[0] != '.').forEach(k => names.push(sid + '.' + k)));

	return { source: 'tests/luci/fixtures/pepwrt.uci.json', names };
}

/* static: the files agree with each other. */

function checkStatic() {
	const menuFile = MENU;
	const aclFile = path.join(PKG, 'root/usr/share/rpcd/acl.d/luci-app-pepwrt.json');
	const menu = JSON.parse(read(menuFile));
	const acl = JSON.parse(read(aclFile));
	const statusJs = read(path.join(VIEWS, 'pepwrt/status.js'));
	const configJs = read(path.join(VIEWS, 'pepwrt/config.js'));

	// Menu: a Services entry whose views exist; each needs the ACL.
	expect(menu['admin/services/pepwrt'], 'menu has admin/services/pepwrt');
	expect(JSON.stringify(menu['admin/services/pepwrt'].depends.acl) == '["luci-app-pepwrt"]', 'menu depends on the luci-app-pepwrt ACL');

	const viewPaths = Object.values(menu).filter(e => e.action && e.action.type == 'view').map(e => e.action.path).sort();

	expect(JSON.stringify(viewPaths) == '["pepwrt/config","pepwrt/status"]', 'menu views are pepwrt/config and pepwrt/status, got ' + viewPaths);
	viewPaths.forEach(p => expect(fs.existsSync(path.join(VIEWS, p + '.js')), 'view file for menu path ' + p));
	Object.keys(menu).forEach(k => expect(k == 'admin/services/pepwrt' || k.startsWith('admin/services/pepwrt/'), 'menu entry ' + k + ' under admin/services/pepwrt'));

	// ACL: read the ubus method and UCI pepwrt, write only UCI pepwrt.
	const grant = acl['luci-app-pepwrt'];
	expect(grant, 'ACL group luci-app-pepwrt');
	expect(JSON.stringify(Object.keys(acl)) == '["luci-app-pepwrt"]', 'ACL has one group');
	expect(JSON.stringify(grant.read.uci) == '["pepwrt","firewall"]', 'ACL reads UCI pepwrt and firewall (flow offloading)');
	expect(JSON.stringify(grant.write) == '{"uci":["pepwrt"]}', 'ACL writes only UCI pepwrt');
	expect(JSON.stringify(grant.read.ubus['luci.pepwrt']) == '["getStatus"]', 'ACL grants luci.pepwrt getStatus');
	// The interface picker (tools.widgets via LuCI's network module).
	expect(JSON.stringify(grant.read.ubus['luci-rpc']) == '["getBoardJSON","getNetworkDevices","getWirelessDevices"]', 'ACL grants the luci-rpc calls of the interface picker');
	expect(JSON.stringify(grant.read.ubus['network.interface']) == '["dump"]', 'ACL grants network.interface dump');

	const declared = statusJs.match(/object:\s*'([^']+)',\s*method:\s*'([^']+)'/);
	expect(declared && declared[1] == 'luci.pepwrt' && declared[2] == 'getStatus', 'status.js calls luci.pepwrt getStatus');

	// Every file a view reads is granted, and only those.
	const consts = {};
	(configJs + statusJs).replace(/var (\w+) = '(\/[^']+)'/g, (all, k, v) => { consts[k] = v; });
	const reads = [];
	(configJs + statusJs).replace(/fs\.read\((\w+|'[^']+')\)/g, (all, a) => { reads.push(a[0] == "'" ? a.slice(1, -1) : consts[a]); });
	expect(JSON.stringify(reads.sort()) == JSON.stringify(Object.keys(grant.read.file || {}).sort()),
		'files read by views ' + JSON.stringify(reads) + ' = files granted ' + JSON.stringify(Object.keys(grant.read.file || {})));
	Object.values(grant.read.file || {}).forEach(p => expect(JSON.stringify(p) == '["read"]', 'file grants are read only'));
	if (reads.length)
		expect(JSON.stringify(grant.read.ubus.file) == '["read"]', 'ACL grants ubus file read for fs.read');

	// The two rpcd plugins register the same object and method.
	const ucode = read(path.join(PKG, 'root/usr/share/rpcd/ucode/luci.pepwrt'));
	expect(/'luci\.pepwrt':\s*\{\s*getStatus:\s*\{/.test(ucode), 'ucode plugin registers luci.pepwrt getStatus');
	const shell = path.join(PKG, 'root/usr/libexec/rpcd/luci.pepwrt');
	expect((fs.statSync(shell).mode & 0o111) == 0o111, 'shell plugin is executable');
	expect(read(shell).startsWith('#!/bin/sh\n'), 'shell plugin starts with #!/bin/sh');

	// Every installed file lives under htdocs/ or root/.
	for (const e of fs.readdirSync(PKG))
		expect([ 'Makefile', 'README.md', 'htdocs', 'root', 'po' ].includes(e), 'unexpected top-level entry ' + e);

	// The Makefile uses luci.mk with the agreed dependencies.
	const mk = read(path.join(PKG, 'Makefile'));
	expect(/^LUCI_DEPENDS:=\+luci-base \+pepwrt$/m.test(mk), 'Makefile LUCI_DEPENDS');
	expect(/^LUCI_TITLE:=/m.test(mk), 'Makefile LUCI_TITLE');
	expect(/^include .*\/luci\.mk$/m.test(mk), 'Makefile includes luci.mk');

	// The translation template is current.
	const potFile = path.join(PKG, 'po/templates/pepwrt.pot');
	const have = potMsgids(read(potFile));
	const want = [ ...new Set(allMessages().map(m => m.msgid)) ];
	want.filter(id => !have.includes(id)).forEach(id => fail('pepwrt.pot lacks ' + JSON.stringify(id)));
	have.filter(id => !want.includes(id)).forEach(id => fail('pepwrt.pot has unused ' + JSON.stringify(id)));
	expect(new Set(have).size == have.length, 'pepwrt.pot has no duplicate msgid');
	expect(want.length > 50, 'views have translatable strings (' + want.length + ')');

	// Every UCI option has a field on the settings page.
	const opts = uciOptionNames();
	opts.names.forEach(n => {
		const [ sid, opt ] = n.split('.');
		// main's options sit in tabs, snoop's are untabbed (tab null).
		const buf = opt.match(/^(server|client)_(snd|rcv)buf$/);
		const re = buf
			? new RegExp(`kernelBuffers\\(s, '${buf[1]}'`)
			: sid == 'main'
			? new RegExp(`field\\(s, '\\w+', [\\w.]+, '${opt}'|ccOption\\(s, '\\w+', '${opt}'`)
			: new RegExp(`field\\(s, null, [\\w.]+, '${opt}'`);
		expect(re.test(configJs), 'settings page has a field for ' + n + ' (from ' + opts.source + ')');
	});

	if (!process.exitCode)
		console.log('static checks passed: %d strings, %d UCI options from %s', want.length, opts.names.length, opts.source);
}

/* Harness pages. */

function statusSeries(n) {
	const base = JSON.parse(read(path.join(HERE, 'fixtures', 'status.json')));
	const out = [];
	let up = base.counters.bytes_up, down = base.counters.bytes_down;

	for (let i = 0; i < n; i++) {
		const st = JSON.parse(JSON.stringify(base));
		// What getStatus returns: the daemon's object plus "running".
		st.running = true;
		// A download that ramps up to about 40 Mbit/s and an upload of a few Mbit/s.
		const downRate = 5e6 * (1 - Math.exp(-i / 12)) * (0.8 + 0.2 * Math.sin(i / 5));
		const upRate = 4e5 * (1 + 0.5 * Math.sin(i / 3));
		down += Math.round(downRate * 3);
		up += Math.round(upRate * 3);
		st.uptime_s = base.uptime_s + 3 * i;
		st.counters.bytes_up = up;
		st.counters.bytes_down = down;
		st.counters.active = 3 + (i % 40);
		st.counters.split = base.counters.split + i;
		st.counters.total = base.counters.total + i;
		st.connections.forEach(c => { c.age_s += 3 * i; });
		out.push(st);
	}

	return out;
}

const SCENARIOS = {
	config: () => ({
		view: 'config',
		checks: JSON.parse(read(path.join(HERE, 'fixtures', 'checks.json')))
	}),
	status: () => ({ view: 'status', status: statusSeries(100), polls: 99 }),
	// Each reason the plugin gives for a pepwrt that is not running.
	'status-stopped': () => ({
		view: 'status',
		status: [ { running: false, error: 'pepwrt: not running (no control socket at /var/run/pepwrt.sock)', reason: 'stopped' } ]
	}),
	'status-notinstalled': () => ({
		view: 'status',
		status: [ { running: false, error: 'pepwrt is not installed (/usr/sbin/pepwrt not found)', reason: 'not_installed' } ]
	}),
	'status-disabled': () => ({
		view: 'status',
		status: [ { running: false, error: 'pepwrt: not running (no control socket at /var/run/pepwrt.sock)', reason: 'disabled' } ]
	}),
	'status-refused': () => ({
		view: 'status',
		status: [ { running: false, error: 'pepwrt: not running (no control socket at /var/run/pepwrt.sock)', reason: 'refused',
			refused: 'bad configuration in /etc/config/pepwrt, not starting: --uplink/--downlink need --rtt (the link\'s round-trip time, e.g. 600ms) to size the window (see \'pepwrt --help\')' } ]
	}),
	// The first rate, after the second sample.
	'status-two-samples': () => ({ view: 'status', status: statusSeries(2), polls: 1 }),
	// A router through a WireGuard tunnel to a gateway running pepwrt.
	'status-tunnel': () => ({
		view: 'status', status: statusSeries(2).map(st => Object.assign(st, { counters: Object.assign(st.counters, { zero_rtt_opens: 42 }) })), polls: 1,
		uci: u => Object.assign(u.pepwrt.main, { tunnel: 'wg0', zero_rtt: '1' })
	}),
	// The link preset picker: GEO fills the figures, LEO empties them.
	'config-preset-geo': () => ({ view: 'config', pick: [ 'main', 'link_preset', 'geo' ], save: {} }),
	'config-preset-leo': () => ({
		view: 'config', pick: [ 'main', 'link_preset', 'leo' ], save: {},
		uci: u => Object.assign(u.pepwrt.main, { uplink: '15mbit', downlink: '100mbit', rtt: '40ms' })
	}),
	// Combinations of settings with pepwrt check's verdicts (see tests/luci.rs).
	'config-combos': () => ({ view: 'config', combos: JSON.parse(read(process.env.PEPWRT_COMBOS)) }),
	'status-nobackend': () => ({ view: 'status', status: [], polls: 1 }),
	// The plugin answers with an error status (rpcd's UBUS_STATUS_*).
	'status-error': () => ({ view: 'status', status: [ { ubus_status: 4 } ], polls: 1 }),
	// Snoop switched off and a port added to a list, then Save.
	'config-save': () => ({ view: 'config', save: { 'snoop.enabled': '0', 'main.exclude_port': [ '22', '853' ] } }),
	// The same with LuCI of the 21.02 era, which has no retain.
	'config-save-2102': () => ({ view: 'config', noRetain: true, save: { 'snoop.enabled': '0', 'main.exclude_port': [ '22', '853' ] } }),
	// An invalid value: Save must refuse and change nothing.
	'config-save-invalid': () => ({ view: 'config', save: { 'main.max_conns': 'lots' } })
};

function page(name, out) {
	const sc = SCENARIOS[name]();
	const H = {
		viewSource: read(path.join(VIEWS, 'pepwrt', sc.view + '.js')),
		uci: (function() {
			const u = JSON.parse(read(path.join(HERE, 'fixtures', 'pepwrt.uci.json')));
			if (sc.uci)
				sc.uci(u);
			return u;
		})(),
		files: { '/proc/sys/net/ipv4/tcp_available_congestion_control': 'reno cubic bbr\n' },
		devices: [ 'br-lan', 'eth0', 'eth1', 'wlan0', 'wlan1' ],
		status: sc.status || [],
		polls: sc.polls || 0,
		pollSecs: 3,
		checks: sc.checks || [],
		acl: JSON.parse(read(path.join(PKG, 'root/usr/share/rpcd/acl.d/luci-app-pepwrt.json'))),
		save: sc.save || null,
		noRetain: !!sc.noRetain,
		pick: sc.pick || null,
		combos: sc.combos || []
	};

	// </script> inside JSON would end the script element early.
	const json = JSON.stringify(H).replace(/<\//g, '<\\/');

	fs.writeFileSync(out, '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>pepwrt ' + name + ' (harness)</title>\n' +
		'<style>' + read(path.join(HERE, 'harness.css')) + '</style>\n' +
		'<script>window.HARNESS = ' + json + ';</script>\n' +
		'<script>' + read(path.join(HERE, 'harness.js')) + '</script>\n' +
		'</head><body><div class="harness-banner">Test harness with stand-ins for LuCI modules, not LuCI itself: ' + name +
		(sc.view == 'config' ? ' (every settings tab shown at once)' : '') + '</div>' +
		'<div id="view"></div><pre id="harness-result"></pre></body></html>\n');
}

function decodeEntities(s) {
	return s.replace(/&quot;/g, '"').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&#39;/g, "'").replace(/&amp;/g, '&');
}

function verify(name, domFile) {
	const dom = read(domFile);
	const m = dom.match(/<pre id="harness-result">([\s\S]*?)<\/pre>/);

	if (!expect(m && m[1].length, name + ': harness finished (no result in the DOM)'))
		return;

	const r = JSON.parse(decodeEntities(m[1]));
	// Only what the view rendered (the page's scripts hold the sources too).
	const shown = dom.substring(dom.indexOf('<div id="view">'), dom.indexOf('<pre id="harness-result">'));
	const has = s => shown.includes(s);

	if (name != 'config-save-invalid')
		expect(r.errors.length == 0, name + ': script errors: ' + r.errors.join(' | '));

	// A LuCI user who is not root gets what the ACL grants, no more.
	expect(r.denied.length == 0, name + ': calls the ACL does not grant: ' + r.denied.join(', '));

	// Everything the page showed through _() is in the template.
	const have = potMsgids(read(path.join(PKG, 'po/templates/pepwrt.pot')));
	[ ...new Set(r.translated) ].filter(s => !have.includes(s)).forEach(s => fail(name + ': shown but not in pepwrt.pot: ' + JSON.stringify(s)));

	if (name == 'config') {
		expect(r.invalid.length == 0, 'sample configuration is valid: ' + r.invalid.join(' | '));
		r.checks.filter(c => !c.ok).forEach(c => fail('validation ' + JSON.stringify(c.check) + ' gave ' + JSON.stringify(c.verdict)));
		expect(r.checks.length > 20, 'validation checks ran');
		uciOptionNames().names.forEach(n => expect(has('data-name="' + n.split('.')[1] + '"'), 'field rendered for ' + n));
		[ 'General', 'Connections', 'Server side', 'Client side', 'Link', 'Advanced' ].forEach(t => expect(has('>' + t + '<'), 'tab ' + t));
		expect(/<option value="bbr"[^>]*>bbr</.test(shown), 'congestion control choices come from the kernel list');
		expect(/class="ifacebadge[^"]*">eth0</.test(shown), 'the interface picker lists the router\'s interfaces');
		[ 'geo', 'leo', 'radio', 'wifi', 'custom' ].forEach(k => expect(new RegExp('<option value="' + k + '"').test(shown), 'link preset ' + k));
		expect(has('gain little (1 MB uploads 1.04x'), 'the help says LEO gains little from the link settings');
		expect(has('sizes the receive window'), 'the download rate\'s help says the router uses it');
	}
	else if (name == 'config-preset-geo' || name == 'config-preset-leo') {
		const main = r.uciAfter.pepwrt.main;
		const want = name == 'config-preset-geo' ? [ '5mbit', '50mbit', '600ms' ] : [ undefined, undefined, undefined ];
		expect(JSON.stringify([ main.uplink, main.downlink, main.rtt ]) == JSON.stringify(want),
			name + ': the preset filled ' + JSON.stringify([ main.uplink, main.downlink, main.rtt ]) + ', wanted ' + JSON.stringify(want));
		expect(!('link_preset' in main), 'the picker is not saved as an option');
		expect(r.rechecked.includes('main.rtt'), 'the round-trip time is checked again after the rates change');
	}
	else if (name == 'config-combos') {
		const combos = JSON.parse(read(process.env.PEPWRT_COMBOS));
		expect(r.combos.length == combos.length && combos.length > 20, 'every combination ran: ' + r.combos.length);
		combos.forEach((c, i) => {
			const form = r.combos[i] || { refusals: [] };
			const refused = form.refusals.length > 0;
			expect(refused == c.daemon.refused,
				JSON.stringify(c.set) + ': pepwrt check ' + (c.daemon.refused ? 'refuses (' + c.daemon.message + ')' : 'accepts') +
				', the form ' + (refused ? 'refuses (' + form.refusals.join('; ') + ')' : 'accepts'));
			if (c.hint) {
				expect(c.daemon.message.includes(c.hint), JSON.stringify(c.set) + ': pepwrt check says ' + JSON.stringify(c.hint) + ': ' + c.daemon.message);
				expect(form.refusals.some(f => f.includes(c.hint)), JSON.stringify(c.set) + ': the form says ' + JSON.stringify(c.hint) + ': ' + form.refusals.join('; '));
			}
		});
	}
	else if (name == 'config-save' || name == 'config-save-2102') {
		const snoop = r.uciAfter.pepwrt.snoop, main = r.uciAfter.pepwrt.main;
		const had = JSON.parse(read(path.join(HERE, 'fixtures', 'pepwrt.uci.json'))).pepwrt;
		expect(snoop.enabled === '0', 'Snoop switched off: ' + JSON.stringify(snoop));
		// Hidden with Snoop off, but kept: switching it on again shows them.
		[ 'target', 'flows', 'cache_size', 'queue' ].forEach(o =>
			expect(JSON.stringify(snoop[o]) == JSON.stringify(had.snoop[o]), 'snoop.' + o + ' kept while Snoop is off: ' + JSON.stringify(snoop[o])));
		expect(JSON.stringify(main.exclude_port) == '["22","853"]', 'lists are saved as arrays: ' + JSON.stringify(main.exclude_port));
		const sets = r.uciOps.filter(op => op[0] == 'set').map(op => op[2] + '.' + op[3]).sort();
		expect(JSON.stringify(sets) == '["main.exclude_port","snoop.enabled"]', 'only the changed options are written: ' + JSON.stringify(sets));
		r.uciOps.filter(op => op[0] == 'unset').forEach(op =>
			expect(had[op[2]][op[3]] === '', 'only empty options are removed, not ' + op[2] + '.' + op[3]));
	}
	else if (name == 'config-save-invalid') {
		expect(r.errors.some(e => /invalid main\.max_conns/.test(e)), 'an invalid value stops the save: ' + r.errors.join(' | '));
		expect(r.uciOps.filter(op => op[0] == 'set').length == 0, 'nothing written after an invalid value: ' + JSON.stringify(r.uciOps));
	}
	else if (name == 'status') {
		expect(r.buttonsOff, 'status page switches off Save/Apply/Reset');
		expect(r.polls == 99 && r.rpcCalls == 100, 'polled: ' + r.polls + ' polls, ' + r.rpcCalls + ' calls');
		// LuCI runs a poll function as soon as it is added: a sample taken
		// then, right after load()'s, would make the first rate noise.
		const gaps = r.callTimes.slice(1).map((t, i) => t - r.callTimes[i]);
		expect(gaps.every(g => g >= 1000), 'samples at least a second apart, got gaps (ms) ' + JSON.stringify(gaps.slice(0, 5)));
		[ 'Running', '198.18.0.2:40000', '[fd00::2]:40002', '[fd00:1::2]:443', 'transferring', 'connecting to server',
		  'Wireless loss recovery (Snoop)', 'Resent locally after duplicate ACKs', '<polyline', 'Download (server → clients)',
		  'cbi-progressbar', 'Link settings', 'uplink 5.00', 'Paced at', '259 segments', 'Measured on the long legs' ].forEach(s => expect(has(s), 'status page shows ' + s));
		expect(!has('Through a gateway'), 'no tunnel row without a tunnel');
		const line = shown.match(/<polyline[^>]*points="([^"]+)"/);
		expect(line && line[1].split(' ').length > 90, 'graph has a point per sample');
		expect(/title="\d+ of 128 \(\d+%\)"/.test(shown), 'pool bar shows active of max_conns');
	}
	else if (name == 'status-stopped') {
		expect(has('Not running') && has('no control socket'), 'stopped daemon is shown with its reason');
		expect(has('logread -e pepwrt') && !has('Enable pepwrt under Settings'), 'an enabled, stopped daemon points to the log');
		expect(!has('Wireless loss recovery'), 'no Snoop section when not running');
	}
	else if (name == 'status-notinstalled') {
		expect(has('Not installed') && has('apk add pepwrt') && !has('Enable pepwrt under Settings'), 'not installed: says to install it');
	}
	else if (name == 'status-disabled') {
		expect(has('Disabled') && has('Enable pepwrt under Settings'), 'disabled: says to enable it');
	}
	else if (name == 'status-refused') {
		expect(has('Refused to start') && has('need --rtt') && !has('Enable pepwrt under Settings'), 'refused: shows the check\'s line');
	}
	else if (name == 'status-two-samples') {
		// The graph is 720 wide with an 80 px axis; one rate covers 3 s of 300.
		const line = shown.match(/<polyline[^>]*points="([^"]+)"/);
		const xs = line ? line[1].split(' ').map(p => parseFloat(p)) : [];
		expect(xs.length == 2 && xs[0] > 80 + 630 * 0.9, 'the first rate is drawn over its own 3 s, not 5 minutes: ' + (line && line[1]));
	}
	else if (name == 'status-tunnel') {
		expect(has('Through a gateway') && has('wg0, to pepwrt at the far end'), 'the tunnel is shown');
		expect(has('Opens without a round trip') && has('on: 42 so far'), 'zero-RTT opens are counted');
	}
	else if (name == 'status-nobackend') {
		expect(has('did not answer'), 'missing backend is explained');
	}
	else if (name == 'status-error') {
		expect(has('did not answer') && !has('Not running'), 'a backend error is shown as such, not as a stopped daemon');
	}

	if (!process.exitCode)
		console.log('%s: harness page verified (%d validation checks, %d polls)', name, r.checks.length, r.polls);
}

/* The ucode plugin, run by Node.js: ucode's builtins that the plugin uses,
   written in JavaScript with the same meaning. */

function ucodeNode(file) {
	const src = read(file);
	const ucFs = {
		popen: cmd => {
			const res = child.spawnSync('/bin/sh', [ '-c', cmd ], { encoding: 'utf8' });
			return { read: () => res.stdout, close: () => (res.status == null ? -1 : res.status) };
		},
		open: p => {
			try {
				const text = fs.readFileSync(p, 'utf8');
				return { read: () => text, close: () => true };
			}
			catch (e) {
				return null;
			}
		},
		stat: p => {
			try {
				const st = fs.statSync(p);
				return { type: st.isDirectory() ? 'directory' : 'file', size: st.size };
			}
			catch (e) {
				return null;
			}
		}
	};
	const builtins = {
		require: name => {
			if (name != 'fs')
				throw new Error('plugin requires ' + name);
			return ucFs;
		},
		getenv: name => process.env[name] == null ? null : process.env[name],
		json: s => JSON.parse(s),
		type: v => v === null || v === undefined ? null : (Array.isArray(v) ? 'array' : (typeof v == 'number' ? (Number.isInteger(v) ? 'int' : 'double') : typeof v)),
		trim: s => String(s).trim(),
		split: (s, sep) => String(s).split(sep),
		replace: (s, from, to) => String(s).split(from).join(to)
	};
	const sig = Function(...Object.keys(builtins), src)(...Object.values(builtins));
	const answer = sig['luci.pepwrt'].getStatus.call({}, {});

	console.log(JSON.stringify(answer));
}

/* answer: checks a getStatus answer. EXPECT maps dotted paths (array
   indexes and .length allowed) to values; a string value starting with ~
   means "contains the rest". */

function answer(text, expectText) {
	const got = JSON.parse(text), want = JSON.parse(expectText);

	expect(got != null && typeof got == 'object' && !Array.isArray(got), 'answer is a JSON object: ' + text);

	for (const [ key, value ] of Object.entries(want)) {
		const actual = key.split('.').reduce((v, k) => (v == null ? undefined : v[k]), got);

		if (typeof value == 'string' && value[0] == '~')
			expect(typeof actual == 'string' && actual.includes(value.substring(1)), key + ' = ' + JSON.stringify(actual) + ', wanted it to contain ' + JSON.stringify(value.substring(1)));
		else
			expect(JSON.stringify(actual) == JSON.stringify(value), key + ' = ' + JSON.stringify(actual) + ', wanted ' + JSON.stringify(value));
	}

	if (process.exitCode)
		console.error('answer was: ' + text);
	else
		console.log('answer matches');
}

/* combos-flags: each combination of tests/luci/fixtures/combos.json as the
   pepwrt flags the init script makes of those UCI options (one line each:
   index, then the flags, tab-separated). combos-merge: the combinations
   with pepwrt check's verdict on each ("index<TAB>refused<TAB>message"
   lines) added as "daemon", for the config-combos page. */

const FLAG_NAMES = {
	'main.buffer_size': '--buffer',
	'snoop.queue': '--snoop-queue',
	'snoop.flows': '--snoop-flows',
	'snoop.cache_size': '--snoop-cache'
};

function combosFlags(file) {
	JSON.parse(read(file)).forEach((c, i) => {
		const flags = [];

		Object.entries(c.set).forEach(([ k, v ]) => {
			if (k == 'main.ipv6') {
				if (v == '0')
					flags.push('--no-ipv6');
				return;
			}
			// A flag (UCI boolean): the switch alone, when on.
			if (k == 'main.zero_rtt') {
				if (v == '1')
					flags.push('--zero-rtt');
				return;
			}
			const flag = FLAG_NAMES[k] || '--' + k.split('.')[1].replace(/_/g, '-');
			(Array.isArray(v) ? v : [ v ]).forEach(x => flags.push(flag, x));
		});
		console.log([ i ].concat(flags).join('\t'));
	});
}

function combosMerge(file, verdicts, out) {
	const combos = JSON.parse(read(file));

	read(verdicts).split('\n').filter(Boolean).forEach(line => {
		const [ i, refused, message ] = line.split('\t');
		combos[+i].daemon = { refused: refused == 'true', message: message || '' };
	});
	combos.forEach((c, i) => expect(c.daemon, 'pepwrt check ran on combination ' + i));
	fs.writeFileSync(out, JSON.stringify(combos, null, '\t'));
}

const [ cmd, a, b, c ] = process.argv.slice(2);

switch (cmd) {
case 'static': checkStatic(); break;
case 'page': page(a, b); break;
case 'verify': verify(a, b); break;
case 'ucode-node': ucodeNode(a); break;
case 'pot': process.stdout.write(pot()); break;
case 'answer': answer(a, b); break;
case 'combos-flags': combosFlags(a); break;
case 'combos-merge': combosMerge(a, b, c); break;
default:
	console.error('usage: tool.js static | page SCENARIO OUT | verify SCENARIO DOM | ucode-node PLUGIN | pot');
	process.exit(2);
}

'use strict';
'require view';
'require rpc';
'require poll';
'require dom';
'require uci';

// Live status page. Every POLL_SECS it asks the rpcd plugin (ubus
// luci.pepwrt getStatus, i.e. "pepwrt status --json") and redraws. The
// throughput graph is computed here, from successive bytes_up/bytes_down
// totals kept in the page for the last GRAPH_SECS.

var POLL_SECS = 3,
    GRAPH_SECS = 300,
    MAX_ROWS = 250;

// reject: an error status from the plugin must fail the call (shown as a
// backend problem), not resolve to {} (which would read as "not running").
var callGetStatus = rpc.declare({
	object: 'luci.pepwrt',
	method: 'getStatus',
	expect: { '': {} },
	reject: true
});

var STATES = {
	'connecting': _('connecting to server'),
	'relay': _('transferring'),
	'half-closed': _('closing (one side done)'),
	'closing': _('closing')
};

function num(v) {
	v = Number(v);
	return isFinite(v) ? v : 0;
}

function scaled(value, base, units, suffix) {
	var i = 0;

	value = num(value);

	while (Math.abs(value) >= base && i < units.length - 1) {
		value /= base;
		i++;
	}

	return (i ? value.toFixed(value < 10 ? 2 : (value < 100 ? 1 : 0)) : String(Math.round(value))) + '\u00a0' + units[i] + suffix;
}

function bytes(n) {
	return scaled(n, 1024, [ 'B', 'KiB', 'MiB', 'GiB', 'TiB' ], '');
}

function rate(bytesPerSec) {
	return scaled(num(bytesPerSec) * 8, 1000, [ 'bit', 'kbit', 'Mbit', 'Gbit' ], '/s');
}

function duration(secs) {
	secs = Math.floor(num(secs));

	var d = Math.floor(secs / 86400),
	    h = Math.floor(secs / 3600) % 24,
	    m = Math.floor(secs / 60) % 60,
	    s = secs % 60;

	if (d)
		return '%dd %dh %dm'.format(d, h, m);
	if (h)
		return '%dh %dm %ds'.format(h, m, s);
	if (m)
		return '%dm %ds'.format(m, s);

	return '%ds'.format(s);
}

function escapeXml(s) {
	return String(s).replace(/[&<>"']/g, function(c) {
		return '&#' + c.charCodeAt(0) + ';';
	});
}

// A two-column table of label/value pairs.
function keyValueTable(rows) {
	return E('table', { 'class': 'table' }, rows.map(function(row) {
		return E('tr', { 'class': 'tr' }, [
			E('td', { 'class': 'td left', 'width': '40%' }, [ row[0] ]),
			E('td', { 'class': 'td left' }, [ row[1] ])
		]);
	}));
}

function progressBar(used, total, text) {
	var pct = total > 0 ? Math.min(100, Math.round(used / total * 100)) : 0;

	return E('div', { 'class': 'cbi-progressbar', 'title': '%s (%d%%)'.format(text, pct) }, [
		E('div', { 'style': 'width:%d%%'.format(pct) })
	]);
}

function section(title, children) {
	return E('div', { 'class': 'cbi-section' }, [ E('h3', {}, [ title ]) ].concat(children));
}

// Rates between successive samples: [ { t, up, down } ] in bytes per second.
function sampleRates(samples) {
	var out = [];

	for (var i = 1; i < samples.length; i++) {
		var a = samples[i - 1], b = samples[i], dt = b.t - a.t;

		if (dt > 0)
			out.push({ t: b.t, up: (b.up - a.up) / dt, down: (b.down - a.down) / dt });
	}

	return out;
}

// A step above the largest value, so the axis reads in round numbers.
function niceCeiling(bitsPerSec) {
	var step = 1000;

	while (step * 10 <= bitsPerSec)
		step *= 10;

	var ceilings = [ 1, 2, 5, 10 ];

	for (var i = 0; i < ceilings.length; i++)
		if (ceilings[i] * step >= bitsPerSec)
			return ceilings[i] * step;

	return 10 * step;
}

function graphSvg(samples, now) {
	var W = 720, H = 220, left = 80, right = 10, top = 10, bottom = 30,
	    pw = W - left - right, ph = H - top - bottom,
	    rates = sampleRates(samples),
	    peak = 0;

	rates.forEach(function(r) {
		peak = Math.max(peak, r.up * 8, r.down * 8);
	});

	var ymax = niceCeiling(peak),
	    x = function(t) { return left + pw * (1 - (now - t) / GRAPH_SECS); },
	    y = function(bps) { return top + ph * (1 - Math.min(bps, ymax) / ymax); },
	    svg = [];

	svg.push('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="100%%" style="max-width:%dpx;font:12px sans-serif" role="img" aria-label="%s">'
		.format(W, H, W, escapeXml(_('Throughput over the last 5 minutes'))));
	svg.push('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>'.format(left, top, pw, ph));

	for (var g = 0; g <= 4; g++) {
		var gy = top + ph * g / 4;

		svg.push('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>'.format(left, gy, left + pw, gy));
		svg.push('<text x="%d" y="%.1f" text-anchor="end" fill="#666">%s</text>'
			.format(left - 6, gy + 4, escapeXml(rate(ymax * (4 - g) / 4 / 8))));
	}

	for (var m = 0; m <= 5; m++) {
		var gx = left + pw * m / 5;

		svg.push('<text x="%.1f" y="%d" text-anchor="%s" fill="#666">%s</text>'
			.format(gx, H - 10, m == 5 ? 'end' : 'middle', escapeXml(m == 5 ? _('now') : _('-%d min').format(5 - m))));
	}

	// A rate is the average since the sample before it, so one rate alone
	// is drawn over that interval only, not back to the graph's left edge.
	var firstRateFrom = samples.length > 1 ? Math.max(samples[samples.length - rates.length - 1].t, now - GRAPH_SECS) : now;

	[ [ 'down', '#1f77b4' ], [ 'up', '#2ca02c' ] ].forEach(function(series) {
		var shown = rates.filter(function(r) { return now - r.t <= GRAPH_SECS; }),
		    pts = shown.map(function(r) {
			return '%.1f,%.1f'.format(x(r.t), y(r[series[0]] * 8));
		    });

		if (pts.length == 1)
			pts.unshift('%.1f,%.1f'.format(x(firstRateFrom), y(shown[0][series[0]] * 8)));

		if (pts.length)
			svg.push('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'.format(series[1], pts.join(' ')));
	});

	svg.push('</svg>');

	return svg.join('');
}

function legend(rates) {
	var last = rates.length ? rates[rates.length - 1] : { up: 0, down: 0 },
	    swatch = function(color) {
		return E('span', { 'style': 'display:inline-block;width:1em;height:.6em;margin:0 .4em 0 1em;background:' + color });
	    };

	return E('p', {}, [
		swatch('#1f77b4'), _('Download (server → clients): %s').format(rate(last.down)),
		swatch('#2ca02c'), _('Upload (clients → server): %s').format(rate(last.up))
	]);
}

function connectionTable(conns) {
	var rows = conns.slice(0, MAX_ROWS).map(function(c) {
		return E('tr', { 'class': 'tr' }, [
			E('td', { 'class': 'td' }, [ String(c.client || '') ]),
			E('td', { 'class': 'td' }, [ String(c.server || '') ]),
			E('td', { 'class': 'td' }, [ duration(c.age_s) ]),
			E('td', { 'class': 'td' }, [ bytes(c.bytes_up) ]),
			E('td', { 'class': 'td' }, [ bytes(c.bytes_down) ]),
			E('td', { 'class': 'td' }, [ STATES[c.state] || String(c.state || '') ])
		]);
	});

	if (!rows.length)
		rows.push(E('tr', { 'class': 'tr placeholder' }, [
			E('td', { 'class': 'td', 'colspan': '6' }, [ E('em', {}, [ _('No accelerated connections right now.') ]) ])
		]));

	var table = E('table', { 'class': 'table' }, [
		E('tr', { 'class': 'tr table-titles' }, [
			E('th', { 'class': 'th' }, [ _('Client') ]),
			E('th', { 'class': 'th' }, [ _('Server') ]),
			E('th', { 'class': 'th' }, [ _('Age') ]),
			E('th', { 'class': 'th' }, [ _('Sent (up)') ]),
			E('th', { 'class': 'th' }, [ _('Received (down)') ]),
			E('th', { 'class': 'th' }, [ _('State') ])
		])
	].concat(rows));

	if (conns.length > MAX_ROWS)
		return E([ table, E('p', {}, [ E('em', {}, [ _('Showing the first %d of %d connections.').format(MAX_ROWS, conns.length) ]) ]) ]);

	return table;
}

return view.extend({
	load: function() {
		this.samples = [];
		this.pid = null;

		// The tunnel is a setting, not something the daemon reports.
		return Promise.all([
			L.resolveDefault(callGetStatus(), null),
			L.resolveDefault(uci.load('pepwrt'), null)
		]).then(function(r) { return r[0]; });
	},

	// The link settings in force, what the long legs measured and the
	// tunnel to a gateway, when any of them is there.
	renderLink: function(st) {
		var link = st.link, learned = st.learned,
		    tunnel = uci.get('pepwrt', 'main', 'tunnel'),
		    rows = [];

		if (link && typeof link == 'object') {
			rows.push([ _('Link settings'), _('uplink %s, downlink %s, round trip %s ms; the %s leg crosses the link').format(
				link.uplink_bps != null ? rate(link.uplink_bps / 8) : _('not set'),
				link.downlink_bps != null ? rate(link.downlink_bps / 8) : _('not set'),
				String(link.rtt_ms), String(link.leg)) ]);
			if (link.pacing_bps != null)
				rows.push([ _('Paced at'), rate(link.pacing_bps / 8) ]);
			if (link.route_initcwnd != null)
				rows.push([ _('First flight'), _('%d segments (the routes\' initial window)').format(num(link.route_initcwnd)) ]);
		}
		if (learned && typeof learned == 'object')
			rows.push([ _('Measured on the long legs'), _('up to %s, smallest round trip %s ms').format(rate(num(learned.send_bps) / 8), String(learned.min_rtt_ms)) ]);
		if (tunnel) {
			rows.push([ _('Through a gateway'), _('%s, to pepwrt at the far end').format(tunnel) ]);
			rows.push([ _('Opens without a round trip'), uci.get('pepwrt', 'main', 'zero_rtt') == '1'
				? _('on: %d so far').format(num((st.counters || {}).zero_rtt_opens)) : _('off') ]);
		}

		return rows.length ? section(_('Link'), [ keyValueTable(rows) ]) : null;
	},

	// Keeps the totals of the last GRAPH_SECS; starts over when the daemon
	// restarted (new pid) or its totals went backwards.
	addSample: function(st) {
		var c = st.counters || {},
		    s = { t: Date.now() / 1000, up: num(c.bytes_up), down: num(c.bytes_down) },
		    last = this.samples[this.samples.length - 1];

		if (st.pid !== this.pid || (last && (s.up < last.up || s.down < last.down)))
			this.samples = [];

		this.pid = st.pid;
		this.samples.push(s);

		while (this.samples.length > 2 && s.t - this.samples[1].t > GRAPH_SECS)
			this.samples.shift();
	},

	// Why pepwrt is not running, as the rpcd plugin found it (reason: not
	// installed, disabled, refused to start, or enabled but stopped), and
	// what to do about it.
	renderStopped: function(st) {
		var states = {
			'not_installed': [ _('Not installed'),
				_('The pepwrt package is not installed: install it (apk add pepwrt, or opkg install pepwrt where the package manager is opkg), then enable it under Settings.') ],
			'disabled': [ _('Disabled'),
				_('Enable pepwrt under Settings, then Save & Apply, to start it.') ],
			'refused': [ _('Refused to start'),
				_('pepwrt checked these settings at its last start and refused them for the reason above. Correct them under Settings, then Save & Apply.') ],
			'stopped': [ _('Not running'),
				_('pepwrt is enabled but not running: it may be starting, or it stopped or crashed. The system log (logread -e pepwrt) says why; Save & Apply under Settings starts it again.') ]
		};
		var state = states[st.reason] || [ _('Not running'),
				_('Enable pepwrt under Settings, then Save & Apply, to start it.') ];

		return section(_('Service'), [
			keyValueTable([
				[ _('State'), E('strong', {}, [ state[0] ]) ],
				[ _('Reason'), String(st.refused || st.error || _('unknown')) ]
			]),
			E('p', { 'class': st.reason == 'refused' ? 'alert-message warning' : '' }, [ state[1] ])
		]);
	},

	renderStatus: function(st) {
		if (st == null)
			return section(_('Service'), [
				E('p', { 'class': 'alert-message warning' }, [
					_('The status backend (ubus object luci.pepwrt) did not answer. Reinstall luci-app-pepwrt or restart rpcd (/etc/init.d/rpcd restart).')
				])
			]);

		// running is true or false (or 1 or 0, depending on how ubus encoded it).
		if (!st.running || !st.counters)
			return this.renderStopped(st);

		this.addSample(st);

		var c = st.counters,
		    maxConns = num(st.max_conns),
		    active = num(c.active),
		    rates = sampleRates(this.samples),
		    parts = [];

		parts.push(section(_('Service'), [
			keyValueTable([
				[ _('State'), E('strong', {}, [ _('Running') ]) ],
				[ _('Version'), String(st.version || '?') ],
				[ _('Process ID'), String(st.pid || '?') ],
				[ _('Running for'), duration(st.uptime_s) ],
				[ _('Accelerated connections'), progressBar(active, maxConns, _('%d of %d').format(active, maxConns)) ],
				[ _('Buffer memory'), _('%s per direction, at most %s in flight in total').format(bytes(st.buffer_bytes), bytes(num(st.buffer_bytes) * 2 * maxConns)) ]
			])
		]));

		var link = this.renderLink(st);

		if (link)
			parts.push(link);

		parts.push(section(_('Counters since start'), [
			keyValueTable([
				[ _('Accelerated (split) connections'), String(num(c.split)) ],
				[ _('Passed through: all places in use'), String(num(c.passed_full)) ],
				[ _('Passed through: excluded by settings'), String(num(c.passed_policy)) ],
				[ _('Refused'), String(num(c.refused)) ],
				[ _('Malformed packets'), String(num(c.malformed)) ],
				[ _('Server did not answer'), String(num(c.connect_failed)) ],
				[ _('Data sent (clients → servers)'), bytes(c.bytes_up) ],
				[ _('Data received (servers → clients)'), bytes(c.bytes_down) ]
			])
		]));

		var graph = E('div', { 'class': 'pepwrt-graph' });

		graph.innerHTML = graphSvg(this.samples, this.samples[this.samples.length - 1].t);

		parts.push(section(_('Throughput'), [
			graph,
			rates.length ? legend(rates) : E('p', {}, [ E('em', {}, [ _('Collecting data; the graph fills in over the next seconds.') ]) ])
		]));

		if (st.snoop && typeof st.snoop == 'object') {
			var sn = st.snoop;

			parts.push(section(_('Wireless loss recovery (Snoop)'), [
				keyValueTable([
					[ _('Tracked connections'), progressBar(num(sn.flows), num(sn.max_flows), _('%d of %d').format(num(sn.flows), num(sn.max_flows))) ],
					[ _('Cache use'), progressBar(num(sn.cache_bytes_used), num(sn.cache_bytes),
						_('%s of %s, %d segments').format(bytes(sn.cache_bytes_used), bytes(sn.cache_bytes), num(sn.cached_segments))) ],
					[ _('Connections tracked since start'), String(num(sn.flows_total)) ],
					[ _('Resent locally after duplicate ACKs'), String(num(sn.local_retransmits_dupack)) ],
					[ _('Resent locally after timeout'), String(num(sn.local_retransmits_timeout)) ],
					[ _('Duplicate ACKs held back'), String(num(sn.dupacks_suppressed)) ],
					[ _('ACKs held back at a hole repaired locally'), String(num(sn.partial_acks_held)) ],
					[ _('Not tracked: table full'), String(num(sn.passed_full)) ]
				])
			]));
		}

		parts.push(section(_('Accelerated connections'), [
			connectionTable(Array.isArray(st.connections) ? st.connections : [])
		]));

		return E('div', {}, parts);
	},

	render: function(st) {
		var body = E('div', { 'id': 'pepwrt-status' }, [ this.renderStatus(st) ]);

		this.fetched = Date.now();

		// LuCI runs a poll function as soon as it is added, milliseconds
		// after load() fetched the first sample; a second sample that close
		// would make the first rate on the graph noise, so that run waits.
		poll.add(L.bind(function() {
			if (Date.now() - this.fetched < POLL_SECS * 500)
				return Promise.resolve();

			this.fetched = Date.now();

			return L.resolveDefault(callGetStatus(), null).then(L.bind(function(next) {
				dom.content(body, this.renderStatus(next));
			}, this));
		}, this), POLL_SECS);

		return E([
			E('h2', {}, [ _('TCP accelerator (pepwrt)') ]),
			E('div', { 'class': 'cbi-map-descr' }, [
				_('Live view of the accelerator, refreshed every %d seconds.').format(POLL_SECS)
			]),
			body
		]);
	},

	handleSave: null,
	handleSaveApply: null,
	handleReset: null
});

'use strict';
'require view';
'require form';
'require fs';
'require uci';
'require network';
'require tools.widgets as widgets';

// Settings page for /etc/config/pepwrt. The checks below mirror what
// "pepwrt run" accepts, so a value LuCI lets through also starts the daemon.

var CC_FILE = '/proc/sys/net/ipv4/tcp_available_congestion_control';

// Sizes as pepwrt reads them: digits, optionally followed by k or m
// (powers of 1024). Returns the number of bytes or null.
function parseSize(value) {
	var m = String(value).match(/^([0-9]+)([kKmM]?)$/);

	if (!m)
		return null;

	var unit = { '': 1, 'k': 1024, 'm': 1048576 }[m[2].toLowerCase()];

	return parseInt(m[1], 10) * unit;
}

function sizeCheck(min, max, minText, maxText) {
	return function(section_id, value) {
		if (value == null || value === '')
			return true;

		var n = parseSize(value);

		if (n == null)
			return _('Enter a size in bytes, optionally with k or m, for example 64k or 4m');

		if (n < min || n > max)
			return _('Enter a size from %s to %s').format(minText, maxText);

		return true;
	};
}

// A number, decimal or 0x-hexadecimal, as pepwrt reads it, or null.
function parseNumber(value) {
	var s = String(value);

	if (/^0x[0-9a-fA-F]+$/.test(s))
		return parseInt(s.substring(2), 16);

	if (/^[0-9]+$/.test(s))
		return parseInt(s, 10);

	return null;
}

function isIPv4(s) {
	var p = s.split('.');

	return p.length == 4 && p.every(function(o) {
		return /^[0-9]{1,3}$/.test(o) && +o <= 255;
	});
}

function isIPv6(s) {
	if (!/^[0-9a-fA-F:.]+$/.test(s) || s.indexOf(':') < 0 || /:::/.test(s))
		return false;

	var halves = s.split('::');

	if (halves.length > 2)
		return false;

	var groups = [];

	halves.forEach(function(h) {
		if (h !== '')
			groups = groups.concat(h.split(':'));
	});

	var words = 0;

	for (var i = 0; i < groups.length; i++) {
		if (i == groups.length - 1 && groups[i].indexOf('.') >= 0) {
			if (!isIPv4(groups[i]))
				return false;
			words += 2;
		}
		else if (/^[0-9a-fA-F]{1,4}$/.test(groups[i])) {
			words++;
		}
		else {
			return false;
		}
	}

	return halves.length == 2 ? words < 8 : words == 8;
}

// One interface name (as Linux writes it) or one subnet in CIDR notation.
function isTarget(s) {
	var slash = s.indexOf('/');

	if (slash >= 0) {
		var addr = s.substring(0, slash),
		    len = s.substring(slash + 1);

		if (!/^[0-9]{1,3}$/.test(len))
			return false;

		if (isIPv4(addr))
			return +len <= 32;

		return isIPv6(addr) && +len <= 128;
	}

	if (isIPv4(s) || isIPv6(s))
		return true;

	return /^[A-Za-z0-9._@-]{1,15}$/.test(s);
}

function targetCheck(section_id, value) {
	var values = Array.isArray(value) ? value : String(value == null ? '' : value).split(/\s+/);

	for (var i = 0; i < values.length; i++)
		if (values[i] !== '' && !isTarget(values[i]))
			return _('"%s" is neither an interface name nor a subnet such as 192.168.1.0/24').format(values[i]);

	return true;
}

// The accelerator's targets: as above, and no IPv6 subnet while IPv6 is off.
function interceptCheck(section_id, value) {
	var valid = targetCheck(section_id, value);

	// At a gateway the tunnel must be the only entry.
	recheck(this.map, section_id, 'tunnel');

	if (valid !== true || formValue(this.map, section_id, 'ipv6') != '0')
		return valid;

	var values = Array.isArray(value) ? value : String(value == null ? '' : value).split(/\s+/);

	for (var i = 0; i < values.length; i++)
		if (isIPv6(values[i].split('/')[0]))
			return _('"%s" is an IPv6 subnet, but IPv6 is switched off below').format(values[i]);

	return true;
}

// A number from min to max (optionally a single bit), as pepwrt reads it.
function numberCheck(min, max, singleBit, message) {
	return function(section_id, value) {
		if (value == null || value === '')
			return true;

		var n = parseNumber(value);

		if (n == null || n < min || n > max || (singleBit && (n & (n - 1)) != 0))
			return message;

		return true;
	};
}

// Snoop's queue must not be the accelerator's (both default when empty).
function snoopQueueCheck(section_id, value) {
	var main = this.map.lookupOption('queue', 'main'),
	    mainQueue = main ? main[0].formvalue('main') : null;

	if (mainQueue == null || mainQueue === '')
		mainQueue = uci.get('pepwrt', 'main', 'queue') || '3135';

	if ((value || '3136') == mainQueue)
		return _('Snoop needs a queue number of its own; the accelerator uses %s').format(mainQueue);

	return true;
}

// A decimal like 2.5 times scale, rounded, as pepwrt computes it (up to
// nine digits after the point, which may be absent: "5." is 5), or null.
function parseDecimal(digits, scale) {
	var m = String(digits).match(/^([0-9]+)(?:\.([0-9]{0,9}))?$/);

	if (!m)
		return null;

	var frac = m[2] || '';

	return parseInt(m[1], 10) * scale + (frac ? Math.round(parseInt(frac, 10) * scale / Math.pow(10, frac.length)) : 0);
}

// value with one of units' suffixes (tried in order, any case) turned into
// [ digits, scale ], or null.
function splitUnit(value, units) {
	var lower = String(value).toLowerCase();

	for (var i = 0; i < units.length; i++)
		if (lower.length > units[i][0].length - 1 && lower.substring(lower.length - units[i][0].length) == units[i][0])
			return [ lower.substring(0, lower.length - units[i][0].length), units[i][1] ];

	return null;
}

// Link rates as pepwrt --uplink/--downlink take them: a number and a unit
// (bit, kbit, mbit, gbit: bits per second, powers of 1000), 8kbit to
// 100gbit. tests/luci.rs runs a table of values through this form and
// through `pepwrt check` and wants the same verdicts.
function rateCheck(section_id, value) {
	if (value == null || value === '')
		return true;

	var split = splitUnit(value, [ [ 'gbit', 1e9 ], [ 'mbit', 1e6 ], [ 'kbit', 1e3 ], [ 'bit', 1 ] ]);

	if (!split) {
		if (/bps$/i.test(String(value)))
			return _('Enter bits per second, for example 80mbit for 10mbps: bps means bytes per second');
		return _('Enter a rate with its unit, for example 10mbit or 850kbit');
	}

	var bps = parseDecimal(split[0], split[1]);

	if (bps == null)
		return _('Enter a rate with its unit, for example 10mbit or 850kbit');
	if (bps < 8000 || bps > 100e9)
		return _('Enter a rate from 8kbit to 100gbit');

	return true;
}

// Another option's value as the form holds it now (not yet saved).
function formValue(map, section_id, name) {
	var o = map.lookupOption(name, section_id),
	    v = o ? o[0].formvalue(section_id) : null;

	return v == null ? '' : v;
}

// The link's round-trip time as pepwrt --rtt takes it: 1ms to 10s, and
// given exactly when a rate is (pepwrt refuses a rate without the RTT,
// which sizes the window, and an RTT without a rate).
function rttCheck(section_id, value) {
	var rates = formValue(this.map, section_id, 'uplink') !== '' || formValue(this.map, section_id, 'downlink') !== '';

	if (value == null || value === '')
		return rates ? _('Enter the round-trip time too: pepwrt needs it with a rate, for example 600ms') : true;

	var split = splitUnit(value, [ [ 'ms', 1e3 ], [ 'us', 1 ], [ 's', 1e6 ] ]);

	if (!split)
		return _('Enter a time with its unit, for example 600ms or 0.6s');

	var us = parseDecimal(split[0], split[1]);

	if (us == null)
		return _('Enter a time with its unit, for example 600ms or 0.6s');
	if (us < 1000 || us > 10e6)
		return _('Enter a time from 1ms to 10s');
	if (!rates)
		return _('Enter an upload or download rate too, or leave the round-trip time empty');

	return true;
}

// A rate changed: the round-trip time's verdict depends on it, so LuCI is
// asked to check that field again (it keeps each field's last verdict).
function recheck(map, section_id, name) {
	var o = map.lookupOption(name, section_id),
	    el = o ? o[0].getUIElement(section_id) : null;

	if (el && typeof el.triggerValidation == 'function')
		el.triggerValidation();
}

function rateField(section_id, value) {
	recheck(this.map, section_id, 'rtt');
	return rateCheck(section_id, value);
}

// The tunnel as pepwrt --tunnel takes it: an interface name; at a
// gateway (the far end of the link) the only interface it accelerates
// from, so no one outside the tunnel can use it.
function tunnelCheck(section_id, value) {
	recheck(this.map, section_id, 'zero_rtt');

	if (value == null || value === '')
		return true;

	if (isIPv4(value) || isIPv6(value) || !/^[A-Za-z0-9._@-]{1,15}$/.test(value))
		return _('Enter the tunnel\'s interface name, for example wg0');

	var from = formValue(this.map, section_id, 'intercept');

	from = (Array.isArray(from) ? from : String(from).split(/\s+/)).filter(function(v) { return v !== ''; });

	if (formValue(this.map, section_id, 'link_leg') == 'client' && (from.length != 1 || from[0] != value))
		return _('At the gateway, accelerate connections from the tunnel alone: set "Accelerate connections from" (General tab) to %s and nothing else').format(value);

	return true;
}

// Zero-round-trip opens need the tunnel they cross (pepwrt refuses
// --zero-rtt without --tunnel).
function zeroRttCheck(section_id, value) {
	if (value == '1' && formValue(this.map, section_id, 'tunnel') === '')
		return _('Enter the tunnel too: opens without a round trip work only through a gateway running pepwrt');

	return true;
}

// pass or reject, as pepwrt --quic takes it (a hand-edited config may
// hold anything).
function quicCheck(section_id, value) {
	if (value == null || value === '' || value == 'pass' || value == 'reject')
		return true;

	return _('Choose pass or reject');
}

// Typical figures of each kind of link, as a user would give SQM, from
// the users' side; docs/link.md has the measurements behind each.
var LINK_PRESETS = {
	geo: [ '5mbit', '50mbit', '600ms' ],
	leo: [ '', '', '' ],
	radio: [ '20mbit', '20mbit', '100ms' ],
	wifi: [ '100mbit', '100mbit', '100ms' ]
};

// Which preset the figures are, for showing the picker: 'none' when all
// are empty, 'custom' when they match no preset.
function presetOf(figures) {
	if (figures.join('') === '')
		return 'none';

	for (var k in LINK_PRESETS)
		if (k != 'leo' && LINK_PRESETS[k].join(' ') == figures.join(' '))
			return k;

	return 'custom';
}

// Adds one option to section s (in tab "tab", or untabbed when null) and
// sets the given properties on it; "depends" is [ option, value ].
function field(s, tab, cls, name, title, description, props) {
	var o = tab ? s.taboption(tab, cls, name, title, description) : s.option(cls, name, title, description);

	Object.keys(props || {}).forEach(function(k) {
		if (k == 'depends')
			o.depends(props[k][0], props[k][1]);
		else
			o[k] = props[k];
	});

	return o;
}

// LuCI removes a hidden field's option from UCI on Save, so switching a
// feature off would lose its settings. Newer LuCI keeps it when told
// (retain); older LuCI (21.02 era) has no retain, and the remove() below
// keeps it there: it removes only while the field is shown (emptied).
function keepWhenHidden(o) {
	var remove = o.remove;

	o.retain = true;
	o.remove = function(section_id) {
		if (this.isActive(section_id))
			return remove.apply(this, arguments);
	};

	return o;
}

// The kernel socket buffers of one leg: options <side>_sndbuf and <side>_rcvbuf
// in tab <side>.
function kernelBuffers(s, side, sndDescription, rcvDescription) {
	var props = { placeholder: _('automatic'), validate: sizeCheck(4096, 1073741824, '4k', '1024m') };

	field(s, side, form.Value, side + '_sndbuf', _('Send buffer'), sndDescription, props);
	field(s, side, form.Value, side + '_rcvbuf', _('Receive buffer'), rcvDescription, props);
}

function ccOption(s, tab, name, title, description, available) {
	var o = s.taboption(tab, form.ListValue, name, title, description),
	    current = uci.get('pepwrt', 'main', name);

	o.value('', _('Kernel default'));

	available.forEach(function(cc) {
		o.value(cc);
	});

	if (current && available.indexOf(current) < 0)
		o.value(current, _('%s (not available in the running kernel)').format(current));

	return o;
}

return view.extend({
	load: function() {
		return Promise.all([
			L.resolveDefault(fs.read(CC_FILE), ''),
			uci.load('pepwrt'),
			L.resolveDefault(network.getWifiNetworks(), []),
			L.resolveDefault(uci.load('firewall'), null)
		]);
	},

	render: function(data) {
		var available = String(data[0] || '').trim().split(/\s+/).filter(function(cc) {
			return /^[A-Za-z0-9_]{1,15}$/.test(cc);
		});
		var m, s, o;

		m = new form.Map('pepwrt', _('TCP accelerator (pepwrt)'),
			_('pepwrt speeds up TCP connections that cross this router over a slow, long or lossy link (satellite, LTE, long-distance Wi-Fi). ' +
			  'It answers the devices on your network itself and opens its own, tuned connection to the server, so each side sees a short, clean path. ' +
			  'Save & Apply restarts the service with the new settings.'));

		s = m.section(form.NamedSection, 'main', 'pepwrt', _('Accelerator'));
		s.addremove = false;

		s.tab('general', _('General'));
		s.tab('pool', _('Connections'));
		s.tab('server', _('Server side'));
		s.tab('client', _('Client side'));
		s.tab('link', _('Link'));
		s.tab('advanced', _('Advanced'));

		/* General */

		field(s, 'general', form.Flag, 'enabled', _('Enable'),
			_('Start pepwrt now and at every boot.'),
			{ rmempty: false });

		field(s, 'general', widgets.DeviceSelect, 'intercept', _('Accelerate connections from'),
			_('Connections started by devices behind these interfaces are accelerated, usually your LAN bridge (br-lan). ' +
			  'You can also type a subnet such as 192.168.1.0/24 to accelerate only some devices. Leave empty to accelerate every forwarded connection.'),
			{ multiple: true, noaliases: true, validate: interceptCheck });

		field(s, 'general', form.DynamicList, 'exclude_port', _('Never accelerate ports'),
			_('Connections to these server ports are always left alone, for example 22 (SSH) for interactive sessions.'),
			{ datatype: 'range(1,65535)', placeholder: '22' });

		o = field(s, 'general', form.Flag, 'ipv6', _('IPv6'),
			_('Accelerate IPv6 connections too, not only IPv4.'),
			{ default: '1', rmempty: false });
		// The subnets above are checked against this switch.
		o.onchange = function(ev, section_id) {
			recheck(this.map, section_id, 'intercept');
		};

		o = field(s, 'general', form.ListValue, 'log_level', _('Log level'),
			_('How much pepwrt writes to the system log. "Information" is a good choice; "Debug" is for tracking down problems.'),
			{ default: 'info' });
		o.value('error', _('Errors only'));
		o.value('warn', _('Warnings'));
		o.value('info', _('Information'));
		o.value('debug', _('Debug'));

		/* Connections */

		field(s, 'pool', form.Value, 'max_conns', _('Maximum accelerated connections'),
			_('How many connections pepwrt accelerates at once. Further connections still work; they just pass through without acceleration until a place frees up.'),
			{ datatype: 'range(1,65000)', placeholder: '128' });

		field(s, 'pool', form.Value, 'buffer_size', _('Buffer per direction'),
			_('Bytes each accelerated connection holds in flight for each direction, from 4k to 16m. ' +
			  'Bigger buffers help fast long-distance links; in flight they take up to max connections × 2 × buffer of RAM, in kernel pipes made at start.'),
			{ placeholder: '32k', validate: sizeCheck(4096, 16777216, '4k', '16m') });

		field(s, 'pool', form.Value, 'idle_timeout', _('Idle timeout (seconds)'),
			_('Close an accelerated connection after this long without any data, from 1 to 86400 seconds.'),
			{ datatype: 'range(1,86400)', placeholder: '600' });

		field(s, 'pool', form.Value, 'connect_timeout', _('Connect timeout (seconds)'),
			_('How long pepwrt waits for the server to answer before it gives up on a new connection.'),
			{ datatype: 'range(1,86400)', placeholder: '10' });

		/* Server side: the connection from the router to the server. */

		o = field(s, 'server', form.ListValue, 'outgoing_source', _('Source address toward servers'),
			_('"Client" keeps each device\'s own address on the connection to the server, as without pepwrt. ' +
			  '"Router" uses the router\'s address instead, which some setups with several uplinks need.'),
			{ default: 'client' });
		o.value('client', _('Client (transparent)'));
		o.value('router', _('Router'));

		ccOption(s, 'server', 'server_cc', _('Congestion control'),
			_('How the router\'s connection to the server paces its sending. The kernel default (cubic) is never slower than without pepwrt; ' +
			  'with the link\'s figures set (Link tab) and a round-trip time of 200 ms or more, pepwrt uses BBR, which keeps its speed through random loss. ' +
			  'The list shows what the running kernel offers; install a package such as kmod-tcp-bbr to get more.'),
			available);

		field(s, 'server', form.Flag, 'server_fastopen', _('TCP Fast Open'),
			_('Send the first data together with the connection request, saving one round trip when the server supports it.'));

		field(s, 'server', form.Flag, 'server_nodelay', _('No delay'),
			_('Send small pieces of data at once instead of collecting them first. Helps interactive traffic, costs a little efficiency.'));

		kernelBuffers(s, 'server',
			_('Kernel send buffer of the connection to the server, from 4k to 1024m. Leave empty to let the kernel size it.'),
			_('Kernel receive buffer of the connection to the server, from 4k to 1024m. Leave empty to let the kernel size it.'));

		field(s, 'server', form.Value, 'server_mss', _('Maximum segment size'),
			_('Largest TCP segment toward the server, from 88 to 32767 bytes. Leave empty to use what the client asked for.'),
			{ datatype: 'range(88,32767)', placeholder: _('automatic') });

		field(s, 'server', form.Value, 'initcwnd', _('Initial window'),
			_('How many segments the router\'s own connections may send before the first acknowledgement (Linux starts with 10). ' +
			  '32 to 64 fills a satellite link several round trips sooner. Applies to the router\'s default routes; leave empty to keep the kernel\'s value.'),
			{ datatype: 'range(1,1024)', placeholder: _('kernel default') });

		/* Client side: the connection between the device and the router. */

		ccOption(s, 'client', 'client_cc', _('Congestion control'),
			_('How the router paces data it sends to your devices. The kernel default is fine for a wired LAN.'),
			available);

		kernelBuffers(s, 'client',
			_('Kernel send buffer of the connection to the device, from 4k to 1024m. Leave empty to let the kernel size it.'),
			_('Kernel receive buffer of the connection to the device, from 4k to 1024m. Leave empty to let the kernel size it.'));

		/* Link: the slow link's figures, as for SQM. */

		// Not an option of its own: it fills the three fields below.
		o = field(s, 'link', form.ListValue, 'link_preset', _('Kind of link'),
			_('Fills in typical figures for the upload and download rates and the round-trip time; replace them with your own link\'s (the rates you would give SQM, and its idle ping time). ' +
			  'Measured with the figures set: GEO satellite uploads 1.10-1.58x faster than without pepwrt; lossy Wi-Fi: the figures of the internet path behind it help uploads (2.31x against 1.58x without them); long radio links were not measured on their own. ' +
			  'LEO satellite (Starlink and the like): the figures gain little (1 MB uploads 1.04x, 1.22x when a handover comes early; larger uploads, downloads and pages 1.00x), so this choice leaves them empty.'),
			{ default: 'none' });
		o.value('none', _('Not set: TCP finds the rate itself'));
		o.value('geo', _('GEO satellite (5/50 Mbit/s, 600 ms)'));
		o.value('leo', _('LEO satellite: leave the figures empty (no gain measured)'));
		o.value('radio', _('Long radio link (20/20 Mbit/s, 100 ms)'));
		o.value('wifi', _('Lossy Wi-Fi behind a 100 Mbit/s, 100 ms path'));
		o.value('custom', _('Custom: your own figures'));
		o.load = function(section_id) {
			return presetOf([ 'uplink', 'downlink', 'rtt' ].map(function(k) {
				return uci.get('pepwrt', section_id, k) || '';
			}));
		};
		o.write = o.remove = function() {};
		o.onchange = function(ev, section_id, value) {
			var figures = LINK_PRESETS[value];

			if (!figures)
				return;

			[ 'uplink', 'downlink', 'rtt' ].forEach(function(k, i) {
				var f = this.map.lookupOption(k, section_id),
				    el = f ? f[0].getUIElement(section_id) : null;

				if (el) {
					el.setValue(figures[i]);
					if (typeof el.triggerValidation == 'function')
						el.triggerValidation();
				}
			}, this);
		};

		field(s, 'link', form.Value, 'uplink', _('Upload rate'),
			_('What the slow link (satellite, LTE, radio) carries from your network out, in bits per second with a unit, for example 5mbit or 850kbit (as for SQM; 10mbps would be bytes). ' +
			  'With a rate and the round-trip time set, pepwrt sends uploads over the link at this rate from the first packet instead of feeling its way up, ' +
			  'and sizes its window and buffers to fill the link. Leave the rates and the round-trip time empty to let TCP find the rate itself.'),
			{ placeholder: _('not set'), validate: rateField });

		field(s, 'link', form.Value, 'downlink', _('Download rate'),
			_('What the slow link carries toward your network, for example 50mbit. This router sizes the receive window of its connections to servers from it (the initial receive window on its routes), ' +
			  'and a pepwrt at the far end of the link (see below) sends downloads at this rate.'),
			{ placeholder: _('not set'), validate: rateField });

		field(s, 'link', form.Value, 'rtt', _('Round-trip time'),
			_('The link\'s round-trip time when idle, for example 600ms for a geostationary satellite or 100ms for a long radio link. ' +
			  'Needed with a rate, and only with one. 200ms or more also switches the connection over the link to BBR, which keeps its speed through random loss.'),
			{ placeholder: _('not set'), validate: rttCheck });

		o = field(s, 'link', form.ListValue, 'link_leg', _('This router sits'),
			_('On the users\' side of the link (the usual case), or at the far end as a gateway in a two-ended setup, where it sends downloads over the link at the download rate.'),
			{ default: 'server' });
		o.value('server', _('On the users\' side'));
		o.value('client', _('At the far end (gateway)'));
		// At a gateway the tunnel must be the only intercepted interface.
		o.onchange = function(ev, section_id) {
			recheck(this.map, section_id, 'tunnel');
		};

		field(s, 'link', form.Value, 'tunnel', _('Through a gateway: tunnel'),
			_('The WireGuard interface (e.g. wg0) whose far end runs pepwrt as the gateway. The link is crossed inside it: its routes get the link\'s windows, and both ends offer each other a full window from the start. On the gateway itself, intercept only this interface.'),
			{ placeholder: _('not set'), validate: tunnelCheck });

		field(s, 'link', form.Flag, 'zero_rtt', _('Open without a round trip'),
			_('Connections across the tunnel carry their first data in the connection request (TCP Fast Open between the two pepwrts), saving one round trip of the link per connection. Needs the tunnel above; set it at both ends.'),
			{ validate: zeroRttCheck });

		o = field(s, 'link', form.ListValue, 'quic', _('QUIC (HTTP/3)'),
			_('QUIC is UDP, which pepwrt cannot accelerate. "Refuse" answers QUIC from your network (UDP to port 443) at once with an error, so browsers switch to HTTP/2 over TCP without waiting, and pepwrt accelerates that: over a long link it loads pages faster than QUIC. ' +
			  'Other UDP (DNS, calls, games) and traffic to the router itself are not touched.'),
			{ default: 'pass', validate: quicCheck });
		o.value('pass', _('Pass: let browsers use it'));
		o.value('reject', _('Refuse: browsers fall back to TCP'));

		/* Advanced: numbers that only matter when they clash with other software. */

		field(s, 'advanced', form.Value, 'queue', _('Packet queue number'),
			_('NFQUEUE number on which pepwrt sees new connections, 0 to 65535. Change it only if another program uses the same number.'),
			{ datatype: 'range(0,65535)', placeholder: '3135' });

		field(s, 'advanced', form.Value, 'port', _('Listener port'),
			_('Local port where intercepted connections are handed to pepwrt. It is not reachable from outside.'),
			{ datatype: 'range(1,65535)', placeholder: '3135' });

		// pepwrt also uses the two bits above the mark, hence the top limit.
		field(s, 'advanced', form.Value, 'mark', _('Packet mark'),
			_('Firewall mark bit for accelerated packets, for example 0x10000. pepwrt also uses the two bits above it, so pick one no other program (such as mwan3 or SQM) uses.'),
			{ placeholder: '0x10000', validate: numberCheck(1, 0x20000000, true,
				_('Enter a single bit between 0x1 and 0x20000000, for example 0x10000')) });

		var tableRange = numberCheck(1, 4294967294, false, _('Enter a table number from 1 to 4294967294'));
		field(s, 'advanced', form.Value, 'table', _('Routing table'),
			_('Number of the routing table pepwrt adds for its packets, 1 to 4294967294. Change it only if another program uses the same table.'),
			{ placeholder: '3135', validate: function(section_id, value) {
				// 253-255 are the kernel's default, main and local tables.
				var n = parseNumber(value);
				if (n >= 253 && n <= 255)
					return _('Tables 253 to 255 belong to the system; choose another, for example 313');
				return tableRange(section_id, value);
			} });

		field(s, 'advanced', form.Value, 'user', _('Run as user'),
			_('After start-up pepwrt gives up root and keeps only the two network permissions it needs. Leave empty to keep running as root.'),
			{ placeholder: 'root' });

		/* Snoop */

		s = m.section(form.NamedSection, 'snoop', 'snoop', _('Wireless loss recovery (Snoop)'),
			_('Snoop helps devices on a lossy wireless link: the router keeps a copy of recent data sent to them and resends lost pieces itself, ' +
			  'so the server does not slow down because of Wi-Fi losses.'));
		s.addremove = false;

		field(s, null, form.Flag, 'enabled', _('Enable Snoop'), null, { rmempty: false });

		// The fields below hide while Snoop is off and keep their options in
		// UCI then (see keepWhenHidden).

		// Snoop cannot work on offloaded flows: fw4 sends them past the
		// forward hook after their first packets.
		if (uci.get('firewall', '@defaults[0]', 'flow_offloading') == '1')
			keepWhenHidden(field(s, null, form.DummyValue, '_offload', _('Flow offloading is on'),
				_('The firewall\'s flow offloading forwards established connections past Snoop, so Snoop repairs nothing. ' +
				  'Turn off "Software flow offloading" under Network → Firewall → General Settings ' +
				  '(uci set firewall.@defaults[0].flow_offloading=0) to use Snoop.'),
				{ depends: [ 'enabled', '1' ] }));

		var wifi = (data[2] || []).map(function(w) { return w.getIfname(); }).filter(function(n) { return n; });

		keepWhenHidden(field(s, null, widgets.DeviceSelect, 'target', _('Wireless side'),
			_('Wi-Fi interfaces (or subnets) behind which the lossy wireless devices are. ' +
			  'An access point in a bridge (the usual setup) counts: only its stations are looked after, not the wired devices on the same bridge. ' +
			  'Empty: every wireless interface of this router.') + ' ' +
			(wifi.length ? _('Wireless interfaces here: %s.').format(wifi.join(', ')) : _('No wireless interface is up now.')),
			{ multiple: true, noaliases: true, validate: targetCheck, depends: [ 'enabled', '1' ] }));

		keepWhenHidden(field(s, null, form.Value, 'flows', _('Tracked connections'),
			_('How many connections Snoop looks after at once, 1 to 4096.'),
			{ datatype: 'range(1,4096)', placeholder: '64', depends: [ 'enabled', '1' ] }));

		keepWhenHidden(field(s, null, form.Value, 'cache_size', _('Cache size'),
			_('Memory for the copies of sent data, from 16k to 64m.'),
			{ placeholder: '1m', validate: sizeCheck(16384, 67108864, '16k', '64m'), depends: [ 'enabled', '1' ] }));

		keepWhenHidden(field(s, null, form.Value, 'queue', _('Packet queue number'),
			_('NFQUEUE number for Snoop, 0 to 65535; must differ from the accelerator\'s.'),
			{ datatype: 'range(0,65535)', placeholder: '3136', depends: [ 'enabled', '1' ], validate: snoopQueueCheck }));

		return m.render();
	}
});

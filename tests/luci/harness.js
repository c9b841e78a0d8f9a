// A small stand-in for the parts of LuCI's client-side framework that the
// pepwrt views use (view, form, rpc, poll, uci, fs, dom, tools.widgets), so
// that the views can be loaded, rendered and checked in a plain browser
// without a router. It is not LuCI: widgets are simplified and LuCI's own
// datatype checks are approximated for the few datatypes the views use.
//
// The page that loads this file defines, before it:
//   HARNESS.viewSource  the view's JavaScript text
//   HARNESS.uci         { config: { section: { '.type': t, option: value|[list] } } }
//   HARNESS.files       { path: text } for fs.read
//   HARNESS.devices     [ name, ... ] for DeviceSelect
//   HARNESS.status      [ status objects ] answered by luci.pepwrt getStatus in turn
//   HARNESS.polls       how many poll rounds to run after rendering
//   HARNESS.pollSecs    seconds the fake clock advances per round
//   HARNESS.checks      [ [ section, option, value, expectValid ], ... ]
//   HARNESS.acl         the package's rpcd ACL file: every ubus call is
//                       checked against it, as for a LuCI user who is not
//                       root (root is granted everything)
//   HARNESS.save        { "section.option": formvalue, ... } typed into the
//                       form, then saved the way LuCI's form.Map.save does
//   HARNESS.noRetain    save as LuCI of the 21.02 era, which has no retain
//   HARNESS.pick        [ section, option, value ]: picked in a list before
//                       saving (its onchange runs, as LuCI's does)
//   HARNESS.combos      [ { set: { "section.option": formvalue } } ]: each
//                       typed into a fresh form and every shown field checked;
//                       the verdicts go to results.combos
// and it reads back #harness-result (JSON) when the body gets class "done".
//
// Where real LuCI behaves in a way a view can get wrong, the harness does
// the same: a poll function runs once as soon as it is added; a ubus call
// answered with an error status resolves to the declared default unless
// the declaration says reject: true; saving removes the options of hidden
// (dependency not met) fields unless they are retained; calls the ACL does
// not grant fail, and the interface picker then shows no interfaces.

(function() {
'use strict';

var H = window.HARNESS,
    results = { errors: [], checks: [], invalid: [], rpcCalls: 0, polls: 0, translated: [],
                callTimes: [], denied: [], uciOps: [], uciAfter: null, combos: [], rechecked: [] };

window.addEventListener('error', function(ev) {
	results.errors.push(String(ev.message));
});

/* Translation and String.format, as LuCI provides them. */

window._ = function(s) {
	results.translated.push(s);
	return s;
};

String.prototype.format = function() {
	var args = arguments, i = 0;

	return this.replace(/%(%|(\.(\d+))?([sdfh]))/g, function(all, pct, dot, prec, conv) {
		if (pct == '%')
			return '%';

		var v = args[i++];

		switch (conv) {
		case 'd': return String(Math.trunc(Number(v)));
		case 'f': return Number(v).toFixed(prec != null ? +prec : 6);
		case 'h': return String(v).replace(/[&<>"']/g, function(c) { return '&#' + c.charCodeAt(0) + ';'; });
		default: return String(v);
		}
	});
};

/* DOM helpers: E() and dom. */

function append(node, children) {
	if (children == null)
		return;

	if (Array.isArray(children)) {
		children.forEach(function(c) { append(node, c); });
		return;
	}

	node.appendChild(children instanceof Node ? children : document.createTextNode(String(children)));
}

window.E = function(tag, attrs, children) {
	if (Array.isArray(tag)) {
		var frag = document.createDocumentFragment();
		append(frag, tag);
		append(frag, attrs);
		return frag;
	}

	if (Array.isArray(attrs) || attrs instanceof Node || typeof attrs == 'string') {
		children = attrs;
		attrs = null;
	}

	var el = document.createElement(tag);

	Object.keys(attrs || {}).forEach(function(k) {
		var v = attrs[k];

		if (v == null)
			return;

		if (typeof v == 'function')
			el.addEventListener(k, v);
		else
			el.setAttribute(k, v);
	});

	append(el, children);

	return el;
};

var dom = {
	content: function(node, children) {
		while (node.firstChild)
			node.removeChild(node.firstChild);
		append(node, children);
		return node;
	},
	append: append
};

/* L */

window.L = {
	bind: function(fn, self) {
		var extra = Array.prototype.slice.call(arguments, 2);
		return function() { return fn.apply(self, extra.concat(Array.prototype.slice.call(arguments))); };
	},
	resolveDefault: function(p, def) {
		return Promise.resolve(p).catch(function() { return def; });
	},
	toArray: function(v) {
		return v == null ? [] : (Array.isArray(v) ? v : String(v).split(/\s+/).filter(Boolean));
	},
	isObject: function(v) { return v != null && typeof v == 'object'; },
	resource: function(p) { return 'about:blank#' + p; },
	dom: dom
};

/* A fake clock, so that polls can run faster than real time. */

var clock = Date.now();
Date.now = function() { return clock; };

/* Modules. */

function extend(base, proto) {
	var cls = function() {
		if (this.__init__)
			this.__init__.apply(this, arguments);
	};
	cls.prototype = Object.create(base.prototype);
	Object.keys(proto).forEach(function(k) { cls.prototype[k] = proto[k]; });
	cls.prototype.constructor = cls;
	cls.extend = function(p) { return extend(cls, p); };
	return cls;
}

function Base() {}
Base.extend = function(p) { return extend(Base, p); };

var view = {
	extend: function(proto) { return extend(Base, proto); }
};

var uciData = H.uci || {};

var uci = {
	load: function(conf) { return Promise.resolve(conf); },
	get: function(conf, sid, opt) {
		var s = (uciData[conf] || {})[sid];
		if (!s)
			return null;
		if (opt == null)
			return s;
		return s[opt] == null ? null : s[opt];
	},
	set: function(conf, sid, opt, val) {
		results.uciOps.push([ 'set', conf, sid, opt, val ]);
		uciData[conf][sid][opt] = val;
	},
	unset: function(conf, sid, opt) {
		var s = (uciData[conf] || {})[sid];

		if (!s || !s.hasOwnProperty(opt))
			return;

		results.uciOps.push([ 'unset', conf, sid, opt ]);
		delete s[opt];
	}
};

/* What a LuCI user who is not root may call: the ubus grants of the
   package's ACL (read and write). */

function ubusAllowed(object, method) {
	var acl = H.acl || {};

	return Object.keys(acl).some(function(group) {
		return [ 'read', 'write' ].some(function(kind) {
			var ubus = (acl[group][kind] || {}).ubus || {},
			    methods = ubus[object] || [];

			return methods.indexOf(method) >= 0 || methods.indexOf('*') >= 0;
		});
	});
}

function ubusCall(object, method) {
	if (ubusAllowed(object, method))
		return Promise.resolve();

	results.denied.push(object + '.' + method);
	return Promise.reject(new Error('Access denied: ' + object + '.' + method));
}

var fs = {
	read: function(path) {
		return (H.files || {}).hasOwnProperty(path)
			? Promise.resolve(H.files[path])
			: Promise.reject(new Error('no such file: ' + path));
	}
};

var statusIndex = 0;

var rpc = {
	declare: function(opts) {
		return function() {
			results.rpcCalls++;
			results.callTimes.push(clock);

			if (opts.object != 'luci.pepwrt' || opts.method != 'getStatus')
				return Promise.reject(new Error('unexpected call ' + opts.object + '.' + opts.method));

			return ubusCall(opts.object, opts.method).then(function() {
				var list = H.status || [];

				// No replies configured: the ubus object is missing, and LuCI's
				// rpc rejects the call.
				if (!list.length)
					return Promise.reject(new Error('Object not found'));

				var reply = list[Math.min(statusIndex++, list.length - 1)];

				// { "ubus_status": N }: the plugin answered with an error
				// status. LuCI rejects only when asked to; otherwise the
				// call resolves to what expect declares as the default.
				if (reply != null && reply.hasOwnProperty('ubus_status')) {
					if (opts.reject)
						return Promise.reject(new Error('RPCError: ubus status ' + reply.ubus_status));
					reply = (opts.expect && opts.expect.hasOwnProperty('')) ? opts.expect[''] : null;
				}

				// What LuCI's rpc does with expect { '': default }.
				if (reply == null && opts.expect && opts.expect.hasOwnProperty(''))
					reply = opts.expect[''];

				return JSON.parse(JSON.stringify(reply));
			});
		};
	}
};

var pollFns = [],
    pollStarts = [];

// LuCI's poller starts as soon as a function is added and runs it at once
// (a few tens of milliseconds after the view's load()), then every
// interval.
var poll = {
	add: function(fn, interval) {
		pollFns.push({ fn: fn, interval: interval });
		pollStarts.push(Promise.resolve().then(function() {
			clock += 25;
			return fn();
		}));
	}
};

/* form */

var Map_, NamedSection, AbstractValue, Value, Flag, ListValue, DynamicList, DeviceSelect;

function datatypeError(type, value) {
	var m;

	if (value == null || value === '')
		return null;

	if ((m = type.match(/^range\((-?\d+),(-?\d+)\)$/)) != null) {
		if (!/^-?\d+$/.test(value) || +value < +m[1] || +value > +m[2])
			return 'Expecting a number between ' + m[1] + ' and ' + m[2];
		return null;
	}

	if (type == 'port') {
		if (!/^\d+$/.test(value) || +value > 65535)
			return 'Expecting a port number';
		return null;
	}

	if (type == 'uinteger')
		return /^\d+$/.test(value) ? null : 'Expecting a non-negative number';

	return 'harness does not know datatype ' + type;
}

Map_ = extend(Base, {
	__init__: function(config, title, description) {
		this.config = config;
		this.title = title;
		this.description = description;
		this.children = [];
		this.formvalues = {};
	},
	section: function(cls) {
		var s = Object.create(cls.prototype);
		cls.apply(s, Array.prototype.slice.call(arguments, 1));
		s.map = this;
		this.children.push(s);
		return s;
	},
	lookupOption: function(name, section_id) {
		for (var i = 0; i < this.children.length; i++) {
			var s = this.children[i];
			if (s.section != section_id)
				continue;
			for (var j = 0; j < s.children.length; j++)
				if (s.children[j].option == name)
					return [ s.children[j], section_id ];
		}
		return null;
	},
	render: function() {
		var map = this;

		// As LuCI: what an option's load() returns is its cfgvalue.
		var loads = [];
		this.children.forEach(function(s) {
			s.children.forEach(function(o) {
				if (o.load)
					loads.push(Promise.resolve(o.load(s.section)).then(function(v) {
						if (v !== undefined)
							o.loaded[s.section] = v;
					}));
			});
		});

		return Promise.all(loads).then(function() {
			var el = E('div', { 'class': 'cbi-map' }, [
				E('h2', {}, [ map.title ]),
				E('div', { 'class': 'cbi-map-descr' }, [ map.description ])
			]);

			map.children.forEach(function(s) { el.appendChild(s.render()); });

			return el;
		});
	}
});

NamedSection = extend(Base, {
	__init__: function(section, type, title, description) {
		this.section = section;
		this.sectiontype = type;
		this.title = title;
		this.description = description;
		this.children = [];
		this.tabs = [];
	},
	tab: function(name, title) {
		this.tabs.push({ name: name, title: title });
	},
	option: function(cls, name, title, description) {
		return this.taboption(null, cls, name, title, description);
	},
	taboption: function(tab, cls, name, title, description) {
		if (tab != null && !this.tabs.some(function(t) { return t.name == tab; }))
			throw new Error('taboption on undeclared tab ' + tab);

		var o = Object.create(cls.prototype);
		cls.call(o, name, title, description);
		o.tab = tab;
		o.section = this;
		o.map = this.map;
		this.children.push(o);
		return o;
	},
	render: function() {
		var s = this,
		    el = E('div', { 'class': 'cbi-section' }, [
			E('h3', {}, [ this.title ]),
			this.description ? E('div', { 'class': 'cbi-section-descr' }, [ this.description ]) : ''
		    ]);

		var groups = this.tabs.length ? this.tabs : [ { name: null, title: null } ];

		if (this.tabs.length)
			el.appendChild(E('ul', { 'class': 'cbi-tabmenu' }, this.tabs.map(function(t, i) {
				return E('li', { 'class': i == 0 ? 'cbi-tab' : 'cbi-tab-disabled' }, [ t.title ]);
			})));

		groups.forEach(function(t) {
			var pane = E('div', { 'class': 'cbi-tabpane' });

			if (t.title != null)
				pane.appendChild(E('h4', { 'class': 'harness-tab-title' }, [ t.title ]));

			s.children.filter(function(o) { return o.tab == t.name; }).forEach(function(o) {
				pane.appendChild(o.renderRow(s.section));
			});

			el.appendChild(pane);
		});

		return el;
	}
});

AbstractValue = extend(Base, {
	__init__: function(option, title, description) {
		this.option = option;
		this.title = title;
		this.description = description;
		this.keylist = [];
		this.vallist = [];
		this.deps = [];
		this.loaded = {};
	},
	value: function(key, label) {
		this.keylist.push(String(key));
		this.vallist.push(label != null ? label : String(key));
	},
	depends: function(field, value) {
		this.deps.push([ field, value ]);
	},
	cfgvalue: function(section_id) {
		if (this.loaded.hasOwnProperty(section_id))
			return this.loaded[section_id];
		return uci.get(this.map.config, section_id, this.option);
	},
	// LuCI's widget of the field: its value is the form's; asking it to
	// validate again is recorded.
	getUIElement: function(section_id) {
		var o = this, key = section_id + '.' + this.option;

		return {
			getValue: function() { return o.formvalue(section_id); },
			setValue: function(v) { o.map.formvalues[key] = v; },
			triggerValidation: function() { results.rechecked.push(key); return false; }
		};
	},
	formvalue: function(section_id) {
		var key = section_id + '.' + this.option;
		if (this.map.formvalues.hasOwnProperty(key))
			return this.map.formvalues[key];
		var v = this.cfgvalue(section_id);
		return v != null ? v : (this.default != null ? String(this.default) : '');
	},
	validate: function() { return true; },
	// Shown, i.e. one of its dependencies met (by the values in the form).
	isActive: function(section_id) {
		return !this.deps.length || this.deps.some(function(d) {
			var dep = this.map.lookupOption(d[0], section_id);
			return dep && dep[0].isActive(section_id) && dep[0].formvalue(section_id) == d[1];
		}, this);
	},
	write: function(section_id, value) {
		uci.set(this.map.config, section_id, this.option, value);
	},
	remove: function(section_id) {
		uci.unset(this.map.config, section_id, this.option);
	},
	// As LuCI's AbstractValue.parse: a hidden field's option is removed
	// unless retained; a shown one is written when it changed, removed
	// when emptied.
	parse: function(section_id) {
		if (!this.isActive(section_id)) {
			if (!this.retain || H.noRetain)
				return this.remove(section_id);
			return;
		}

		var fval = this.formvalue(section_id),
		    cval = this.cfgvalue(section_id),
		    verdict = this.check(section_id, fval);

		if (verdict !== true)
			throw new Error('invalid ' + section_id + '.' + this.option + ': ' + verdict);

		if (fval != null && fval !== '' && !(Array.isArray(fval) && !fval.length)) {
			if (JSON.stringify(fval) != JSON.stringify(cval))
				this.write(section_id, fval);
		}
		else if (this.rmempty !== false) {
			this.remove(section_id);
		}
	},
	// LuCI's order: the datatype first, then the option's own validate().
	check: function(section_id, value) {
		var values = Array.isArray(value) ? value : [ value ];

		if (this.datatype) {
			for (var i = 0; i < values.length; i++) {
				var err = datatypeError(this.datatype, values[i]);
				if (err)
					return err;
			}
		}

		var r = this.validate(section_id, value);
		return r === true ? true : String(r);
	},
	renderWidget: function(section_id, value) {
		return E('input', { 'type': 'text', 'class': 'cbi-input-text', 'value': value || '', 'placeholder': this.placeholder || '' });
	},
	renderRow: function(section_id) {
		var value = this.cfgvalue(section_id),
		    shown = value != null ? value : (this.default != null ? this.default : null),
		    verdict = this.check(section_id, shown == null ? '' : shown);

		if (verdict !== true)
			results.invalid.push(section_id + '.' + this.option + ': ' + verdict);

		var hidden = !this.isActive(section_id);

		return E('div', { 'class': 'cbi-value' + (verdict !== true ? ' cbi-value-error' : ''), 'data-name': this.option, 'style': hidden ? 'opacity:.45' : '' }, [
			E('label', { 'class': 'cbi-value-title' }, [ this.title || '' ]),
			E('div', { 'class': 'cbi-value-field' }, [
				this.renderWidget(section_id, shown),
				this.description ? E('div', { 'class': 'cbi-value-description' }, [ this.description ]) : '',
				verdict !== true ? E('div', { 'class': 'cbi-value-description harness-error' }, [ verdict ]) : ''
			])
		]);
	}
});

Value = AbstractValue.extend({});

Flag = AbstractValue.extend({
	__init__: function(option, title, description) {
		AbstractValue.prototype.__init__.call(this, option, title, description);
		this.enabled = '1';
		this.disabled = '0';
	},
	renderWidget: function(section_id, value) {
		var box = E('input', { 'type': 'checkbox' });
		box.checked = String(value) == this.enabled;
		return box;
	}
});

ListValue = AbstractValue.extend({
	renderWidget: function(section_id, value) {
		var sel = E('select', { 'class': 'cbi-input-select' });

		this.keylist.forEach(function(k, i) {
			var opt = E('option', { 'value': k }, [ this.vallist[i] ]);
			opt.selected = (value != null ? String(value) : '') == k;
			sel.appendChild(opt);
		}, this);

		return sel;
	}
});

DynamicList = AbstractValue.extend({
	renderWidget: function(section_id, value) {
		var items = L.toArray(value).map(function(v) {
			return E('div', { 'class': 'item' }, [ E('span', {}, [ v ]), ' ×' ]);
		});

		items.push(E('input', { 'type': 'text', 'placeholder': this.placeholder || '' }));

		return E('div', { 'class': 'cbi-dynlist' }, items);
	}
});

// The picker lists devices through LuCI's network module, whose start-up
// makes these ubus calls; one denied and the list stays empty.
var NETWORK_CALLS = [
	[ 'luci-rpc', 'getBoardJSON' ],
	[ 'luci-rpc', 'getNetworkDevices' ],
	[ 'luci-rpc', 'getWirelessDevices' ],
	[ 'network.interface', 'dump' ]
];

DeviceSelect = ListValue.extend({
	load: function() {
		var self = this;

		return Promise.all(NETWORK_CALLS.map(function(c) { return ubusCall(c[0], c[1]); })).then(function() {
			self.devices = H.devices || [];
		}, function() {
			self.devices = [];
		});
	},
	renderWidget: function(section_id, value) {
		var chosen = L.toArray(value),
		    names = this.devices.concat(chosen.filter(function(v) { return this.devices.indexOf(v) < 0; }, this));

		return E('div', { 'class': 'cbi-dropdown' }, names.map(function(n) {
			return E('span', { 'class': 'ifacebadge' + (chosen.indexOf(n) >= 0 ? ' chosen' : '') }, [ n ]);
		}));
	}
});

var form = {
	Map: Map_,
	NamedSection: NamedSection,
	Value: Value,
	Flag: Flag,
	ListValue: ListValue,
	DynamicList: DynamicList,
	DummyValue: Value
};

// LuCI's network module as the Snoop picker uses it: the wireless
// networks, each with the interface name it has while up.
var network = {
	getWifiNetworks: function() {
		return Promise.resolve((H.wifi || [ 'phy0-ap0' ]).map(function(n) {
			return { getIfname: function() { return n; } };
		}));
	}
};

var modules = {
	'view': view,
	'form': form,
	'rpc': rpc,
	'poll': poll,
	'uci': uci,
	'network': network,
	'fs': fs,
	'dom': dom,
	'tools.widgets': { DeviceSelect: DeviceSelect, NetworkSelect: DeviceSelect }
};

/* Load the view the way LuCI's loader does: read the 'require x [as y]'
   directives at the top, then run the source as a function body whose
   parameters are the required modules. */

function loadView(source) {
	var names = [], values = [],
	    rest = source.replace(/^\s*'use strict';/, ''),
	    m;

	while ((m = rest.match(/^\s*'require ([\w.]+)(?: as (\w+))?';/)) != null) {
		if (!modules.hasOwnProperty(m[1]))
			throw new Error('harness lacks module ' + m[1]);
		names.push(m[2] || m[1].split('.').pop());
		values.push(modules[m[1]]);
		rest = rest.substring(m[0].length);
	}

	return new Function(names.join(','), "'use strict';" + rest).apply(null, values);
}

function finish() {
	var out = document.getElementById('harness-result');
	out.textContent = JSON.stringify(results);
	document.body.classList.add('done');
}

// Types the values into the form and saves it as LuCI does: every option
// of every section parses itself; the result is what UCI holds after.
function saveForm(map, changes) {
	Object.keys(changes).forEach(function(k) { map.formvalues[k] = changes[k]; });

	try {
		map.children.forEach(function(s) {
			s.children.forEach(function(o) { o.parse(s.section); });
		});
	}
	catch (e) {
		results.errors.push('save: ' + e.message);
	}

	results.uciAfter = JSON.parse(JSON.stringify(uciData));
}

// Each combination typed into a fresh form: every shown field of every
// section checked, as LuCI does before it saves.
function runCombos(map) {
	if (!map)
		return;

	(H.combos || []).forEach(function(c) {
		var refusals = [];

		map.formvalues = JSON.parse(JSON.stringify(c.set));
		map.children.forEach(function(s) {
			s.children.forEach(function(o) {
				if (!o.isActive(s.section))
					return;
				var verdict = o.check(s.section, o.formvalue(s.section));
				if (verdict !== true)
					refusals.push(s.section + '.' + o.option + ': ' + verdict);
			});
		});
		results.combos.push({ set: c.set, refusals: refusals });
	});
	map.formvalues = {};
}

function runChecks(map) {
	(H.checks || []).forEach(function(c) {
		var opt = map && map.lookupOption(c[1], c[0]);

		if (!opt) {
			results.checks.push({ check: c, ok: false, why: 'no such option' });
			return;
		}

		var verdict = opt[0].check(c[0], c[2]);
		results.checks.push({ check: c, ok: (verdict === true) === c[3], verdict: verdict });
	});
}

window.addEventListener('load', function() {
	var root = document.getElementById('view'),
	    View = loadView(H.viewSource),
	    v = new View(),
	    map = null;

	var mapRender = Map_.prototype.render;
	Map_.prototype.render = function() {
		map = this;
		return mapRender.apply(this, arguments);
	};

	Promise.resolve(v.load()).then(function(data) {
		return v.render(data);
	}).then(function(node) {
		root.appendChild(node);
		runChecks(map);
		runCombos(map);

		if (H.pick && map) {
			var picked = map.lookupOption(H.pick[1], H.pick[0])[0];
			map.formvalues[H.pick[0] + '.' + H.pick[1]] = H.pick[2];
			if (picked.onchange)
				picked.onchange(null, H.pick[0], H.pick[2]);
		}

		if (H.save && map)
			saveForm(map, H.save);

		// The first run of each poll function, then the rounds, advancing
		// the fake clock.
		var chain = Promise.all(pollStarts);

		for (var i = 0; i < (H.polls || 0); i++) {
			chain = chain.then(function() {
				clock += (H.pollSecs || 3) * 1000;
				results.polls++;
				return Promise.all(pollFns.map(function(p) { return p.fn(); }));
			});
		}

		return chain;
	}).then(function() {
		// Read-only pages switch LuCI's Save/Apply/Reset buttons off with null.
		results.buttonsOff = v.handleSave === null && v.handleSaveApply === null && v.handleReset === null;
		finish();
	}).catch(function(err) {
		results.errors.push(String(err && err.stack || err));
		finish();
	});
});
})();

# shellcheck shell=dash
# Stub of OpenWrt's /lib/functions.sh: the UCI readers the init script
# uses, over a small parser of UCI's file syntax (config/option/list lines,
# values bare or in single or double quotes, # comments on their own line).

# stub_log <name> <args...>: one line per call, arguments single-quoted.
stub_log() {
	local line="$1" a
	shift
	for a in "$@"; do
		line="$line '$a'"
	done
	echo "$line" >>"${STUB_LOG:?STUB_LOG not set}"
}

# Values live in variables named CFG_<section>_<option>; lists also have
# CFG_<section>_<option>_N and CFG_<section>_<option>_<i>.
config_load() {
	local file="${UCI_CONFIG_DIR:?UCI_CONFIG_DIR not set}/$1"
	local kw name value section=""
	stub_log config_load "$1"
	[ -f "$file" ] || return 1
	while read -r kw name value; do
		case "$kw" in '' | '#'*) continue ;; esac
		# name for config lines is the type and value the section name
		value="${value#[\'\"]}"
		value="${value%[\'\"]}"
		name="${name#[\'\"]}"
		name="${name%[\'\"]}"
		case "$kw" in
		config) section="$value" ;;
		option) eval "CFG_${section}_${name}=\$value" ;;
		list)
			local n
			eval "n=\${CFG_${section}_${name}_N:-0}"
			n=$((n + 1))
			eval "CFG_${section}_${name}_N=$n"
			eval "CFG_${section}_${name}_$n=\$value"
			;;
		esac
	done <"$file"
}

# config_get <var> <section> <option> [default]
config_get() {
	local _cg_v
	eval "_cg_v=\${CFG_$2_$3-\$4}"
	eval "$1=\$_cg_v"
}

# config_get_bool <var> <section> <option> [default]: 1 or 0
config_get_bool() {
	local _cgb_v
	config_get _cgb_v "$2" "$3" "$4"
	case "$_cgb_v" in
	1 | on | true | yes | enabled) _cgb_v=1 ;;
	0 | off | false | no | disabled) _cgb_v=0 ;;
	*) _cgb_v="$4" ;;
	esac
	eval "$1=\$_cgb_v"
}

# config_list_foreach <section> <option> <function> [args...]
config_list_foreach() {
	local section="$1" option="$2" fn="$3" n i=1 v
	shift 3
	eval "n=\${CFG_${section}_${option}_N:-0}"
	while [ "$i" -le "$n" ]; do
		eval "v=\$CFG_${section}_${option}_$i"
		"$fn" "$v" "$@"
		i=$((i + 1))
	done
}

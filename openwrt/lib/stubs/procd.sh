# shellcheck shell=dash
# Stub of OpenWrt's /lib/functions/procd.sh: every call is logged by
# stub_log (from the stub functions.sh) instead of being sent to procd.

procd_open_service() { stub_log procd_open_service "$@"; }
procd_close_service() { stub_log procd_close_service "$@"; }
procd_open_instance() { stub_log procd_open_instance "$@"; }
procd_close_instance() { stub_log procd_close_instance "$@"; }
procd_set_param() { stub_log procd_set_param "$@"; }
procd_append_param() { stub_log procd_append_param "$@"; }
procd_open_trigger() { stub_log procd_open_trigger "$@"; }
procd_close_trigger() { stub_log procd_close_trigger "$@"; }
procd_add_reload_trigger() { stub_log procd_add_reload_trigger "$@"; }
procd_add_interface_trigger() { stub_log procd_add_interface_trigger "$@"; }
procd_kill() { stub_log procd_kill "$@"; }

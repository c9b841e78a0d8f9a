# shellcheck shell=bash
# OpenWrt architecture names and the Rust triples/qemu runners behind them.
# Sourced by cross/build and openwrt/build-packages so both agree on one table.

# shellcheck disable=SC2034  # used by the scripts that source this file
PEPWRT_ARCHS=(mips_24kc mipsel_24kc arm_cortex-a7_neon-vfpv4 aarch64_cortex-a53 x86_64)

arch_triple() {
    case $1 in
        mips_24kc) echo mips-unknown-linux-musl;;
        mipsel_24kc) echo mipsel-unknown-linux-musl;;
        arm_cortex-a7_neon-vfpv4) echo armv7-unknown-linux-musleabihf;;
        aarch64_cortex-a53) echo aarch64-unknown-linux-musl;;
        x86_64) echo x86_64-unknown-linux-musl;;
        *) return 1;;
    esac
}

# qemu-user binary that runs this architecture's programs on an x86_64 host
# (empty: runs natively).
arch_qemu() {
    case $1 in
        mips_24kc) echo qemu-mips-static;;
        mipsel_24kc) echo qemu-mipsel-static;;
        arm_cortex-a7_neon-vfpv4) echo qemu-arm-static;;
        aarch64_cortex-a53) echo qemu-aarch64-static;;
        x86_64) echo "";;
        *) return 1;;
    esac
}

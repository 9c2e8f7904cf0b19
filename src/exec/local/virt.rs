//! Whether this host is a container or a virtual machine, and which kind: the files
//! `systemd-detect-virt` looks at (and cgroup and mount hints for hosts without systemd), read
//! once per process, and a pure, table-tested decision over their contents.

use std::fs;
use std::path::Path;
use std::sync::OnceLock;

use super::model::Virtualization;
use crate::exec::procfs;

static VIRTUALIZATION: OnceLock<Virtualization> = OnceLock::new();

/// The contents of every file virtualization detection looks at (`None` when unreadable).
#[derive(Debug, Clone, Default)]
pub(crate) struct VirtInputs {
    /// `/run/systemd/container` (written by systemd inside a container).
    pub(crate) systemd_container: Option<String>,
    /// `/proc/1/environ`, NUL-separated (often unreadable without root).
    pub(crate) pid1_environ: Option<String>,
    /// `/.dockerenv` exists.
    pub(crate) dockerenv: bool,
    /// `/run/.containerenv` exists (Podman).
    pub(crate) containerenv: bool,
    /// `/proc/self/cgroup`.
    pub(crate) cgroup: Option<String>,
    /// `/proc/self/mountinfo`.
    pub(crate) mountinfo: Option<String>,
    /// `/sys/class/dmi/id/sys_vendor`.
    pub(crate) sys_vendor: Option<String>,
    /// `/sys/class/dmi/id/product_name`.
    pub(crate) product_name: Option<String>,
    /// `/proc/cpuinfo`.
    pub(crate) cpuinfo: Option<String>,
    /// `/sys/devices/system/clocksource/clocksource0/available_clocksource`.
    pub(crate) clocksource: Option<String>,
    /// `/sys/hypervisor/type` (Xen).
    pub(crate) hypervisor_type: Option<String>,
}

impl VirtInputs {
    fn read() -> VirtInputs {
        let text = |p: &str| fs::read(p).ok().map(|b| String::from_utf8_lossy(&b).into_owned());
        VirtInputs {
            systemd_container: text("/run/systemd/container"),
            pid1_environ: text("/proc/1/environ"),
            dockerenv: Path::new("/.dockerenv").exists(),
            containerenv: Path::new("/run/.containerenv").exists(),
            cgroup: text("/proc/self/cgroup"),
            mountinfo: text("/proc/self/mountinfo"),
            sys_vendor: text("/sys/class/dmi/id/sys_vendor"),
            product_name: text("/sys/class/dmi/id/product_name"),
            cpuinfo: text("/proc/cpuinfo"),
            clocksource: text("/sys/devices/system/clocksource/clocksource0/available_clocksource"),
            hypervisor_type: text("/sys/hypervisor/type"),
        }
    }
}

/// Detected once per process: it does not change while we run.
pub(super) fn virtualization() -> Virtualization {
    VIRTUALIZATION
        .get_or_init(|| detect_virtualization(&VirtInputs::read()))
        .clone()
}

pub(crate) fn detect_virtualization(inputs: &VirtInputs) -> Virtualization {
    let vm = detect_vm(inputs);
    let hypervisor = vm.as_ref().map(|(kind, _)| kind.clone());
    if let Some((kind, from)) = detect_container(inputs) {
        let container_id = container_id(&kind, inputs);
        return Virtualization {
            kind,
            container: true,
            container_id,
            hypervisor,
            detected_from: Some(from.to_string()),
        };
    }
    match vm {
        Some((kind, from)) => Virtualization {
            kind,
            container: false,
            container_id: None,
            hypervisor,
            detected_from: Some(from.to_string()),
        },
        None => Virtualization {
            kind: "none".to_string(),
            container: false,
            container_id: None,
            hypervisor: None,
            detected_from: None,
        },
    }
}

/// The container kind and the file that told, strongest evidence first (the order
/// `systemd-detect-virt` uses, then cgroup and mount hints for hosts without systemd).
fn detect_container(i: &VirtInputs) -> Option<(String, &'static str)> {
    if let Some(v) = i.systemd_container.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        return Some((container_kind(v), "/run/systemd/container"));
    }
    if let Some(v) = i.pid1_environ.as_deref().and_then(environ_container) {
        return Some((container_kind(v), "/proc/1/environ"));
    }
    if i.containerenv {
        return Some(("podman".to_string(), "/run/.containerenv"));
    }
    if i.dockerenv {
        return Some(("docker".to_string(), "/.dockerenv"));
    }
    if let Some(kind) = i.cgroup.as_deref().and_then(cgroup_container_kind) {
        return Some((kind.to_string(), "/proc/self/cgroup"));
    }
    if let Some(m) = i.mountinfo.as_deref() {
        if runtime_id_from_mountinfo(m, "containers").is_some() {
            return Some(("docker".to_string(), "/proc/self/mountinfo"));
        }
        if runtime_id_from_mountinfo(m, "overlay-containers").is_some() {
            return Some(("podman".to_string(), "/proc/self/mountinfo"));
        }
        if proxmox_ct_id_from_mountinfo(m).is_some() {
            return Some(("lxc".to_string(), "/proc/self/mountinfo"));
        }
    }
    None
}

/// A `container=` value as a kind: lowercase, only `[a-z0-9._-]`, at most 32 characters.
fn container_kind(value: &str) -> String {
    let kind: String = value
        .trim()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(32)
        .collect();
    if kind.is_empty() { "container".to_string() } else { kind }
}

/// `container=VALUE` from a NUL-separated environment block.
fn environ_container(environ: &str) -> Option<&str> {
    environ
        .split('\0')
        .find_map(|kv| kv.strip_prefix("container="))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The cgroup paths of `/proc/self/cgroup` (`ID:CONTROLLERS:PATH` per line).
fn cgroup_paths(cgroup: &str) -> impl Iterator<Item = &str> {
    cgroup.lines().filter_map(|l| l.splitn(3, ':').nth(2))
}

fn cgroup_container_kind(cgroup: &str) -> Option<&'static str> {
    for path in cgroup_paths(cgroup) {
        for seg in path.split('/') {
            if seg == "docker" || (seg.starts_with("docker-") && seg.ends_with(".scope")) {
                return Some("docker");
            }
            if seg.starts_with("libpod-") {
                return Some("podman");
            }
            if seg == "lxc" || seg.starts_with("lxc.payload") {
                return Some("lxc");
            }
            if seg.starts_with("kubepods") {
                return Some("kubernetes");
            }
        }
    }
    None
}

fn container_id(kind: &str, i: &VirtInputs) -> Option<String> {
    let mountinfo = i.mountinfo.as_deref().unwrap_or("");
    let cgroup = i.cgroup.as_deref().unwrap_or("");
    match kind {
        "docker" => runtime_id_from_mountinfo(mountinfo, "containers")
            .or_else(|| cgroup_runtime_id(cgroup, &["docker"], "docker-")),
        "podman" => runtime_id_from_mountinfo(mountinfo, "overlay-containers")
            .or_else(|| cgroup_runtime_id(cgroup, &[], "libpod-")),
        "lxc" | "lxc-libvirt" => proxmox_ct_id_from_mountinfo(mountinfo).or_else(|| lxc_id_from_cgroup(cgroup)),
        "kubernetes" => cgroup_runtime_id(cgroup, &[], "cri-containerd-").or_else(|| {
            cgroup_paths(cgroup)
                .flat_map(|p| p.split('/'))
                .find(|s| is_hex64(s))
                .map(str::to_string)
        }),
        _ => None,
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The 64-hex id in a cgroup path: a segment after one named in `parents`
/// (`/docker/<id>`), or `<prefix><id>.scope` (systemd cgroup driver).
fn cgroup_runtime_id(cgroup: &str, parents: &[&str], prefix: &str) -> Option<String> {
    for path in cgroup_paths(cgroup) {
        let segs: Vec<&str> = path.split('/').collect();
        for (n, seg) in segs.iter().enumerate() {
            if n > 0 && parents.contains(&segs[n - 1]) && is_hex64(seg) {
                return Some(seg.to_string());
            }
            if let Some(id) = seg.strip_prefix(prefix).map(|s| s.trim_end_matches(".scope"))
                && is_hex64(id)
            {
                return Some(id.to_string());
            }
        }
    }
    None
}

/// Container runtimes bind-mount these files from the container's own directory on the host.
const RUNTIME_FILE_MOUNTS: &[&str] = &["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];

/// The 64-hex container id from the bind mount of `/etc/hostname` & co, whose root is
/// `.../<dir>/<id>/...` (Docker: `containers`, Podman: `overlay-containers`). Only those mount
/// points count: on a Docker *host*, `/var/lib/docker/containers/<id>/mounts/shm` is mounted too.
fn runtime_id_from_mountinfo(mountinfo: &str, dir: &str) -> Option<String> {
    procfs::parse_mountinfo(mountinfo)
        .into_iter()
        .filter(|m| RUNTIME_FILE_MOUNTS.contains(&m.mount_point.as_str()))
        .find_map(|m| {
            let segs: Vec<&str> = m.root.split('/').collect();
            segs.windows(2)
                .find(|w| w[0] == dir && is_hex64(w[1]))
                .map(|w| w[1].to_string())
        })
}

/// The Proxmox CT id from the root mount: LVM `/dev/mapper/pve-vm--101--disk--0`, ZFS
/// `rpool/data/subvol-101-disk-0`, or a btrfs root path `/images/101/subvol-101-disk-0.subvol`.
fn proxmox_ct_id_from_mountinfo(mountinfo: &str) -> Option<String> {
    // The last mount on `/` is the one in effect.
    let root = procfs::parse_mountinfo(mountinfo)
        .into_iter()
        .rfind(|m| m.mount_point == "/")?;
    proxmox_volume_ct_id(&root.source).or_else(|| proxmox_volume_ct_id(&root.root))
}

fn proxmox_volume_ct_id(volume: &str) -> Option<String> {
    let last = volume.rsplit('/').next()?;
    // device-mapper doubles the dashes inside VG and LV names.
    let name = last.replace("--", "-");
    for prefix in ["subvol-", "vm-", "basevol-", "base-"] {
        for (at, _) in name.match_indices(prefix) {
            if at > 0 && !name[..at].ends_with('-') {
                continue;
            }
            let rest = &name[at + prefix.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if !digits.is_empty() && rest[digits.len()..].starts_with("-disk-") {
                return Some(digits);
            }
        }
    }
    None
}

/// `/lxc/<id>/...` or `/lxc.payload.<id>/...` in a cgroup path.
fn lxc_id_from_cgroup(cgroup: &str) -> Option<String> {
    for path in cgroup_paths(cgroup) {
        let segs: Vec<&str> = path.split('/').collect();
        for (n, seg) in segs.iter().enumerate() {
            let id = if *seg == "lxc" {
                segs.get(n + 1).copied()
            } else {
                seg.strip_prefix("lxc.payload.")
            };
            if let Some(id) =
                id.filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            {
                return Some(id.to_string());
            }
        }
    }
    None
}

/// The hypervisor and the file that told: DMI vendor/product first, then the `hypervisor`
/// CPU flag with the clock sources to name it.
fn detect_vm(i: &VirtInputs) -> Option<(String, &'static str)> {
    if i.hypervisor_type.as_deref().map(str::trim) == Some("xen") {
        return Some(("xen".to_string(), "/sys/hypervisor/type"));
    }
    let clocks: Vec<&str> = i.clocksource.as_deref().unwrap_or("").split_whitespace().collect();
    let kvm_clock = clocks.contains(&"kvm-clock");
    let flagged = i.cpuinfo.as_deref().is_some_and(cpuinfo_has_hypervisor_flag);
    let vendor = i.sys_vendor.as_deref().unwrap_or("").trim();
    let product = i.product_name.as_deref().unwrap_or("").trim();
    if let Some(kind) = dmi_vm_kind(vendor, product, kvm_clock, flagged) {
        return Some((kind.to_string(), "/sys/class/dmi/id"));
    }
    if flagged {
        let kind = if kvm_clock {
            "kvm"
        } else if clocks.iter().any(|c| c.starts_with("hyperv")) {
            "hyperv"
        } else if clocks.contains(&"xen") {
            "xen"
        } else {
            "vm"
        };
        return Some((kind.to_string(), "/proc/cpuinfo"));
    }
    None
}

fn dmi_vm_kind(vendor: &str, product: &str, kvm_clock: bool, flagged: bool) -> Option<&'static str> {
    let kind = match vendor {
        "QEMU" if kvm_clock => "kvm",
        "QEMU" => "qemu",
        "Xen" => "xen",
        "innotek GmbH" | "Oracle Corporation" if product == "VirtualBox" => "virtualbox",
        "Microsoft Corporation" if product == "Virtual Machine" => "hyperv",
        "Bochs" => "bochs",
        // EC2 bare-metal instances say Amazon too; only a flagged CPU is a VM.
        "Amazon EC2" if flagged => "amazon",
        "Google" if product == "Google Compute Engine" => "google",
        _ if vendor.starts_with("VMware") || product.starts_with("VMware") => "vmware",
        _ if vendor.starts_with("Parallels") => "parallels",
        _ if product == "KVM" || product.starts_with("KVM ") => "kvm",
        _ if product == "VirtualBox" => "virtualbox",
        _ => return None,
    };
    Some(kind)
}

/// Whether the first `flags` line of `/proc/cpuinfo` (x86) lists `hypervisor`.
fn cpuinfo_has_hypervisor_flag(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "flags").then_some(value)
        })
        .is_some_and(|flags| flags.split_whitespace().any(|f| f == "hypervisor"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_ID: &str = "3f1c8e0a9b7d6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e";

    const BARE_METAL_CPUINFO: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD Ryzen 7 5700G with Radeon Graphics\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr svm\n";

    const VM_CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Common KVM processor\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx lm constant_tsc rep_good nopl xtopology cpuid tsc_known_freq pni cx16 x2apic hypervisor lahf_lm\n";

    fn check(
        name: &str,
        inputs: VirtInputs,
        kind: &str,
        container: bool,
        id: Option<&str>,
        hypervisor: Option<&str>,
        from: Option<&str>,
    ) {
        let got = detect_virtualization(&inputs);
        let want = Virtualization {
            kind: kind.to_string(),
            container,
            container_id: id.map(str::to_string),
            hypervisor: hypervisor.map(str::to_string),
            detected_from: from.map(str::to_string),
        };
        assert_eq!(got, want, "{name}");
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    fn bare_metal_host() -> VirtInputs {
        VirtInputs {
            cgroup: s("0::/system.slice/tailopsmcp.service\n"),
            mountinfo: s(
                "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro\n\
                          23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n\
                          24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw\n\
                          25 22 259:1 / /boot/efi rw,relatime shared:29 - vfat /dev/nvme0n1p1 rw,fmask=0077\n",
            ),
            sys_vendor: s("Micro-Star International Co., Ltd.\n"),
            product_name: s("MS-7C02\n"),
            cpuinfo: s(BARE_METAL_CPUINFO),
            clocksource: s("tsc hpet acpi_pm \n"),
            ..VirtInputs::default()
        }
    }

    fn proxmox_kvm_guest() -> VirtInputs {
        VirtInputs {
            cgroup: s("0::/system.slice/tailopsmcp.service\n"),
            mountinfo: s("25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro\n"),
            sys_vendor: s("QEMU\n"),
            product_name: s("Standard PC (i440FX + PIIX, 1996)\n"),
            cpuinfo: s(VM_CPUINFO),
            clocksource: s("kvm-clock tsc hpet acpi_pm \n"),
            ..VirtInputs::default()
        }
    }

    #[test]
    fn lxc_on_proxmox_lvm_thin() {
        let inputs = VirtInputs {
            systemd_container: s("lxc\n"),
            pid1_environ: s("container=lxc\0PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin\0"),
            cgroup: s("0::/system.slice/tailopsmcp.service\n"),
            mountinfo: s(
                "1046 1045 253:7 / / rw,relatime master:1 - ext4 /dev/mapper/pve-vm--101--disk--0 rw,stripe=16\n\
                          1047 1046 0:81 / /dev rw,relatime - tmpfs none rw,size=492k,mode=755,uid=100000,gid=100000,inode64\n\
                          1048 1046 0:85 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n\
                          1067 1048 0:48 /proc/cpuinfo /proc/cpuinfo rw,nosuid,nodev,relatime - fuse.lxcfs lxcfs rw,user_id=0,group_id=0,allow_other\n\
                          1080 1046 0:86 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw\n",
            ),
            sys_vendor: s("Dell Inc.\n"),
            product_name: s("PowerEdge R730\n"),
            cpuinfo: s(BARE_METAL_CPUINFO),
            clocksource: s("tsc hpet acpi_pm \n"),
            ..VirtInputs::default()
        };
        check(
            "lxc lvm",
            inputs,
            "lxc",
            true,
            Some("101"),
            None,
            Some("/run/systemd/container"),
        );
    }

    #[test]
    fn lxc_on_proxmox_zfs_without_systemd() {
        // Alpine CT: no /run/systemd/container, /proc/1/environ unreadable as non-root.
        let inputs = VirtInputs {
            cgroup: s("0::/\n"),
            mountinfo: s(
                "870 869 0:60 / / rw,relatime - zfs rpool/data/subvol-105-disk-0 rw,xattr,posixacl,casesensitive\n\
                          871 870 0:65 / /dev rw,relatime - tmpfs none rw,size=492k,mode=755\n",
            ),
            cpuinfo: s(BARE_METAL_CPUINFO),
            ..VirtInputs::default()
        };
        check(
            "lxc zfs",
            inputs,
            "lxc",
            true,
            Some("105"),
            None,
            Some("/proc/self/mountinfo"),
        );
    }

    #[test]
    fn lxc_id_from_cgroup_when_root_mount_says_nothing() {
        let inputs = VirtInputs {
            systemd_container: s("lxc"),
            cgroup: s("12:pids:/lxc/203/system.slice\n0::/lxc/203/system.slice/tailopsmcp.service\n"),
            mountinfo: s("100 99 7:0 / / rw,relatime - ext4 /dev/loop0 rw\n"),
            ..VirtInputs::default()
        };
        check(
            "lxc cgroup",
            inputs,
            "lxc",
            true,
            Some("203"),
            None,
            Some("/run/systemd/container"),
        );
        assert_eq!(lxc_id_from_cgroup("0::/lxc.payload.118/init.scope\n"), s("118"));
    }

    #[test]
    fn proxmox_volume_names() {
        assert_eq!(proxmox_volume_ct_id("/dev/mapper/pve-vm--101--disk--0"), s("101"));
        assert_eq!(proxmox_volume_ct_id("/dev/mapper/my--vg-vm--2000--disk--1"), s("2000"));
        assert_eq!(proxmox_volume_ct_id("/dev/mapper/myvm--store-vm--7--disk--0"), s("7"));
        assert_eq!(proxmox_volume_ct_id("rpool/data/subvol-105-disk-0"), s("105"));
        assert_eq!(proxmox_volume_ct_id("/images/110/subvol-110-disk-0.subvol"), s("110"));
        assert_eq!(proxmox_volume_ct_id("tank/base-9000-disk-0"), s("9000"));
        assert_eq!(proxmox_volume_ct_id("/dev/mapper/pve-root"), None);
        assert_eq!(proxmox_volume_ct_id("rpool/ROOT/pve-1"), None);
        assert_eq!(proxmox_volume_ct_id("/dev/sda1"), None);
        assert_eq!(proxmox_volume_ct_id("/dev/mapper/vg-myvm--data"), None);
    }

    #[test]
    fn docker_in_a_kvm_vm() {
        let mountinfo = format!(
            "714 657 0:167 / / rw,relatime master:312 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,upperdir=/var/lib/docker/overlay2/9a8b/diff,workdir=/var/lib/docker/overlay2/9a8b/work\n\
             715 714 0:170 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n\
             716 714 0:171 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755,inode64\n\
             733 714 254:1 /var/lib/docker/containers/{DOCKER_ID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda1 rw,discard,errors=remount-ro\n\
             734 714 254:1 /var/lib/docker/containers/{DOCKER_ID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw,discard,errors=remount-ro\n\
             735 714 254:1 /var/lib/docker/containers/{DOCKER_ID}/hosts /etc/hosts rw,relatime - ext4 /dev/vda1 rw,discard,errors=remount-ro\n"
        );
        let inputs = VirtInputs {
            dockerenv: true,
            cgroup: s("0::/\n"),
            mountinfo: Some(mountinfo),
            ..proxmox_kvm_guest()
        };
        check(
            "docker",
            inputs,
            "docker",
            true,
            Some(DOCKER_ID),
            Some("kvm"),
            Some("/.dockerenv"),
        );
    }

    #[test]
    fn docker_from_cgroup_v1_only() {
        let cgroup = format!("12:memory:/docker/{DOCKER_ID}\n11:cpu,cpuacct:/docker/{DOCKER_ID}\n0::/\n");
        let inputs = VirtInputs {
            cgroup: Some(cgroup),
            ..VirtInputs::default()
        };
        check(
            "docker cgroup v1",
            inputs,
            "docker",
            true,
            Some(DOCKER_ID),
            None,
            Some("/proc/self/cgroup"),
        );
        let systemd_driver = format!("0::/system.slice/docker-{DOCKER_ID}.scope\n");
        assert_eq!(cgroup_runtime_id(&systemd_driver, &["docker"], "docker-"), s(DOCKER_ID));
    }

    #[test]
    fn podman_rootless() {
        let mountinfo = format!(
            "600 550 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/home/u/.local/share/containers/storage/overlay/l/X\n\
             610 600 0:45 /home/u/.local/share/containers/storage/overlay-containers/{DOCKER_ID}/userdata/hostname /etc/hostname rw,nosuid,nodev,relatime - tmpfs tmpfs rw\n"
        );
        let inputs = VirtInputs {
            containerenv: true,
            mountinfo: Some(mountinfo),
            ..VirtInputs::default()
        };
        check(
            "podman",
            inputs,
            "podman",
            true,
            Some(DOCKER_ID),
            None,
            Some("/run/.containerenv"),
        );
    }

    #[test]
    fn container_kind_from_pid1_environ_and_nspawn() {
        let inputs = VirtInputs {
            pid1_environ: s("PATH=/usr/bin\0container=podman\0HOME=/root\0"),
            ..VirtInputs::default()
        };
        check("environ", inputs, "podman", true, None, None, Some("/proc/1/environ"));
        let inputs = VirtInputs {
            systemd_container: s("systemd-nspawn\n"),
            ..bare_metal_host()
        };
        check(
            "nspawn",
            inputs,
            "systemd-nspawn",
            true,
            None,
            None,
            Some("/run/systemd/container"),
        );
        assert_eq!(container_kind(" LXC-libvirt\n"), "lxc-libvirt");
        assert_eq!(container_kind("$(rm -rf)"), "rm-rf");
        assert_eq!(container_kind("!!"), "container");
    }

    #[test]
    fn kubernetes_pod() {
        let cgroup = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod4f1c.slice/cri-containerd-{DOCKER_ID}.scope\n"
        );
        let inputs = VirtInputs {
            cgroup: Some(cgroup),
            ..VirtInputs::default()
        };
        check(
            "k8s",
            inputs,
            "kubernetes",
            true,
            Some(DOCKER_ID),
            None,
            Some("/proc/self/cgroup"),
        );
    }

    #[test]
    fn kvm_guest_on_proxmox() {
        check(
            "kvm",
            proxmox_kvm_guest(),
            "kvm",
            false,
            None,
            Some("kvm"),
            Some("/sys/class/dmi/id"),
        );
        let tcg = VirtInputs {
            clocksource: s("tsc hpet acpi_pm\n"),
            ..proxmox_kvm_guest()
        };
        check(
            "qemu tcg",
            tcg,
            "qemu",
            false,
            None,
            Some("qemu"),
            Some("/sys/class/dmi/id"),
        );
    }

    #[test]
    fn other_hypervisors() {
        let vmware = VirtInputs {
            sys_vendor: s("VMware, Inc.\n"),
            product_name: s("VMware Virtual Platform\n"),
            clocksource: s("tsc hpet acpi_pm\n"),
            ..proxmox_kvm_guest()
        };
        check(
            "vmware",
            vmware,
            "vmware",
            false,
            None,
            Some("vmware"),
            Some("/sys/class/dmi/id"),
        );
        let hyperv = VirtInputs {
            sys_vendor: s("Microsoft Corporation\n"),
            product_name: s("Virtual Machine\n"),
            clocksource: s("hyperv_clocksource_tsc_page acpi_pm\n"),
            ..proxmox_kvm_guest()
        };
        check(
            "hyperv",
            hyperv,
            "hyperv",
            false,
            None,
            Some("hyperv"),
            Some("/sys/class/dmi/id"),
        );
        let xen = VirtInputs {
            hypervisor_type: s("xen\n"),
            sys_vendor: None,
            product_name: None,
            clocksource: s("xen tsc\n"),
            ..proxmox_kvm_guest()
        };
        check(
            "xen",
            xen,
            "xen",
            false,
            None,
            Some("xen"),
            Some("/sys/hypervisor/type"),
        );
        // Firecracker: no DMI at all, only the CPU flag and kvm-clock.
        let firecracker = VirtInputs {
            sys_vendor: None,
            product_name: None,
            ..proxmox_kvm_guest()
        };
        check(
            "firecracker",
            firecracker,
            "kvm",
            false,
            None,
            Some("kvm"),
            Some("/proc/cpuinfo"),
        );
        let unknown = VirtInputs {
            sys_vendor: None,
            product_name: None,
            clocksource: s("tsc\n"),
            ..proxmox_kvm_guest()
        };
        check("unknown", unknown, "vm", false, None, Some("vm"), Some("/proc/cpuinfo"));
        let ec2_metal = VirtInputs {
            sys_vendor: s("Amazon EC2\n"),
            product_name: s("m5.metal\n"),
            ..bare_metal_host()
        };
        check("ec2 metal", ec2_metal, "none", false, None, None, None);
    }

    #[test]
    fn bare_metal_and_docker_host() {
        check("bare metal", bare_metal_host(), "none", false, None, None, None);
        // A Docker host mounts each container's shm under /var/lib/docker/containers/<id>/.
        let mut host = bare_metal_host();
        if let Some(m) = host.mountinfo.as_mut() {
            m.push_str(&format!(
                "300 22 0:55 / /var/lib/docker/containers/{DOCKER_ID}/mounts/shm rw,nosuid,nodev,noexec,relatime shared:150 - tmpfs shm rw,size=65536k\n\
                 301 22 0:56 / /var/lib/docker/overlay2/9a8b/merged rw,relatime shared:151 - overlay overlay rw,lowerdir=/x\n"
            ));
        }
        host.cgroup = s("0::/system.slice/docker.service\n");
        check("docker host", host, "none", false, None, None, None);
        // A Proxmox host: its CTs' monitor cgroups are not a container kind for the host itself.
        let proxmox_host = VirtInputs {
            mountinfo: s("25 1 253:1 / / rw,relatime shared:1 - ext4 /dev/mapper/pve-root rw,errors=remount-ro\n"),
            cgroup: s("0::/lxc.monitor.101/\n"),
            ..bare_metal_host()
        };
        check("proxmox host", proxmox_host, "none", false, None, None, None);
    }

    #[test]
    fn cpuinfo_flag() {
        assert!(cpuinfo_has_hypervisor_flag(VM_CPUINFO));
        assert!(!cpuinfo_has_hypervisor_flag(BARE_METAL_CPUINFO));
        assert!(!cpuinfo_has_hypervisor_flag(
            "processor : 0\nFeatures : fp asimd evtstrm\n"
        ));
    }
}

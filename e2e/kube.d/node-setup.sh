# Runs inside the node rootfs (chroot, stdin of bash) from `e2e/kube build`: packages, then
# the systemd arrangement kind's base image makes, with Debian's containerd and runc placed
# where kind's units expect them.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# No service may start inside the chroot.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $NODE_PACKAGES
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d

# kind's arrangement: only the units a node needs, journald not reading the host's kmsg.
find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
    /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
    /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >>/etc/systemd/journald.conf
ln -sf /usr/lib/systemd/systemd /sbin/init
systemctl enable kubelet.service containerd.service undo-mount-hacks.service
systemctl mask systemd-binfmt.service
mkdir -p /etc/kubernetes/manifests /etc/cni/net.d /opt/cni

# Debian's binaries where kind's units and config look for them.
for b in containerd ctr containerd-shim-runc-v2; do ln -sf "$(command -v "$b")" "/usr/local/bin/$b"; done
mkdir -p /usr/local/sbin && ln -sf "$(command -v runc)" /usr/local/sbin/runc
ln -sfn /usr/lib/cni /opt/cni/bin

# The base OCI spec kind's containerd config names: with kind's product-files hook, no rlimits.
ctr oci spec | jq '.hooks.createContainer = ((.hooks.createContainer // []) + [{"path": "/kind/bin/mount-product-files.sh"}]) | del(.process.rlimits)' \
    >/etc/containerd/cri-base.json

# This VM's bounding set lacks CAP_SYS_RESOURCE, so runc cannot lower a sandbox's
# oom_score_adj: with restrict_oom_score_adj containerd clamps it to what is allowed.
sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' /etc/containerd/config.toml
grep -q 'restrict_oom_score_adj = true' /etc/containerd/config.toml

# Every image is preloaded; should anything still try a pull, it goes to a closed port on
# loopback instead of a registry.
cat >>/etc/containerd/config.toml <<'EOF'

[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"
EOF
mkdir -p /etc/containerd/certs.d/_default
echo 'server = "http://127.0.0.1:1"' >/etc/containerd/certs.d/_default/hosts.toml

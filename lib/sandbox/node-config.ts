/**
 * The configuration files of the local cluster's real node: a containerd of
 * its own (CRI plugin), the CNI network, the kubelet and kube-proxy. Plain
 * functions of the node's directories, so each setting is tested and the
 * reasons for the unusual ones sit next to them.
 */
import { join } from 'node:path'

/** The node as the API server knows it. */
export const NODE_NAME = 'doc-server-node'
/**
 * The node's address: an extra /32 on the loopback device (this kernel has
 * no dummy interfaces), so the API server reaches the kubelet (logs, exec)
 * without any of the machine's real addresses being involved; the kubelet
 * refuses a 127.x node IP.
 */
export const NODE_LINK = 'lo'
export const NODE_ADDRESS_LABEL = 'lo:docsrv'
export const NODE_IP = '10.89.0.1'
/** The pods' bridge and subnet, clear of docker0 (172.17.0.0/16). */
export const POD_BRIDGE = 'docsrv-cni0'
export const POD_SUBNET = '10.88.0.0/16'
export const CNI_NETWORK = 'doc-server-pods'
/** Nothing can be pulled from a public registry: the sandbox image is built locally under this name. */
export const SANDBOX_IMAGE = 'localhost/doc-server/pause:1'
export const CONTAINERD_NAMESPACE = 'k8s.io'
export const KUBELET_HEALTHZ_PORT = 10248
export const KUBE_PROXY_HEALTHZ_PORT = 10256
export const KUBE_PROXY_METRICS_PORT = 10249

export interface NodeDirs {
  root: string
  containerd: {
    dir: string
    config: string
    root: string
    state: string
    socket: string
    runcRoot: string
    certsDir: string
    log: string
    pid: string
  }
  cni: { confDir: string; ipamDir: string }
  kubelet: { dir: string; config: string; root: string; podLogs: string; log: string; pid: string }
  kubeProxy: { dir: string; config: string; log: string; pid: string }
}

export function nodeDirs(root: string): NodeDirs {
  const c = join(root, 'containerd')
  const k = join(root, 'kubelet')
  const p = join(root, 'kube-proxy')
  return {
    root,
    containerd: {
      dir: c,
      config: join(c, 'config.toml'),
      root: join(c, 'root'),
      state: join(c, 'state'),
      socket: join(c, 'containerd.sock'),
      runcRoot: join(c, 'runc'),
      certsDir: join(c, 'certs.d'),
      log: join(c, 'containerd.log'),
      pid: join(c, 'containerd.pid'),
    },
    cni: { confDir: join(root, 'cni', 'net.d'), ipamDir: join(root, 'cni', 'ipam') },
    kubelet: {
      dir: k,
      config: join(k, 'config.yaml'),
      root: join(k, 'root'),
      podLogs: join(k, 'pod-logs'),
      log: join(k, 'kubelet.log'),
      pid: join(k, 'kubelet.pid'),
    },
    kubeProxy: { dir: p, config: join(p, 'config.yaml'), log: join(p, 'kube-proxy.log'), pid: join(p, 'kube-proxy.pid') },
  }
}

const q = (s: string) => JSON.stringify(s)

/**
 * A second containerd beside the Docker engine's, with its own root, state,
 * socket and runc root, so neither sees the other's containers.
 */
export function containerdConfig(d: NodeDirs): string {
  return `version = 2
root = ${q(d.containerd.root)}
state = ${q(d.containerd.state)}
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = ${q(d.containerd.socket)}

[ttrpc]
  address = ${q(`${d.containerd.socket}.ttrpc`)}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ${q(SANDBOX_IMAGE)}
  # The machine leaves CAP_SYS_RESOURCE out of root's bounding set: without this every
  # sandbox fails with runc's "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # PID 1 is not systemd: cgroupfs, like the kubelet's cgroupDriver.
        SystemdCgroup = false
        Root = ${q(d.containerd.runcRoot)}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = ${q(d.cni.confDir)}
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    # hosts.toml files here: the local registry speaks plain http.
    config_path = ${q(d.containerd.certsDir)}
`
}

/** The registry host's hosts.toml: `127.0.0.1:5000` is plain http, as the Docker engine treats it. */
export function registryHostsToml(registry: string): string {
  return `server = ${q(`http://${registry}`)}\n\n[host.${q(`http://${registry}`)}]\n  capabilities = ["pull", "resolve"]\n`
}

/**
 * Bridge + host-local on the pod subnet, portmap, and the firewall plugin:
 * dockerd sets the FORWARD policy to DROP, and bridged pod-to-pod traffic
 * passes FORWARD, so each pod's address is let through explicitly.
 */
export function cniConflist(d: NodeDirs): object {
  return {
    cniVersion: '1.0.0',
    name: CNI_NETWORK,
    plugins: [
      {
        type: 'bridge',
        bridge: POD_BRIDGE,
        isGateway: true,
        ipMasq: true,
        hairpinMode: true,
        ipam: { type: 'host-local', dataDir: d.cni.ipamDir, ranges: [[{ subnet: POD_SUBNET }]], routes: [{ dst: '0.0.0.0/0' }] },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
      { type: 'firewall', backend: 'iptables' },
      { type: 'loopback' },
    ],
  }
}

/**
 * The kubelet, as this machine needs it: cgroup v1 is accepted explicitly,
 * containerd 1.6 does not report its cgroup driver so it is named, swap and
 * disk thresholds never evict the test pods, and image GC never removes the
 * locally built sandbox image. The API server reaches the kubelet on the
 * node's own address only.
 */
export function kubeletConfig(d: NodeDirs): object {
  return {
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    failCgroupV1: false,
    cgroupDriver: 'cgroupfs',
    containerRuntimeEndpoint: `unix://${d.containerd.socket}`,
    address: NODE_IP,
    port: 10250,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    healthzPort: KUBELET_HEALTHZ_PORT,
    authentication: { anonymous: { enabled: true }, webhook: { enabled: false }, x509: {} },
    authorization: { mode: 'AlwaysAllow' },
    failSwapOn: false,
    registerNode: true,
    serializeImagePulls: false,
    evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '1%', 'imagefs.available': '1%', 'nodefs.inodesFree': '1%' },
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    resolvConf: '/etc/resolv.conf',
    podLogsDir: d.kubelet.podLogs,
    // No cluster DNS: the tests address Services by ClusterIP.
    clusterDNS: [],
    nodeStatusUpdateFrequency: '4s',
    syncFrequency: '10s',
    fileCheckFrequency: '20s',
    shutdownGracePeriod: '0s',
  }
}

/** kube-proxy in iptables mode (the kernel has no IPVS), leaving conntrack sysctls as they are. */
export function kubeProxyConfig(kubeconfig: string): object {
  return {
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    mode: 'iptables',
    clientConnection: { kubeconfig },
    hostnameOverride: NODE_NAME,
    bindAddress: NODE_IP,
    clusterCIDR: POD_SUBNET,
    healthzBindAddress: `127.0.0.1:${KUBE_PROXY_HEALTHZ_PORT}`,
    metricsBindAddress: `127.0.0.1:${KUBE_PROXY_METRICS_PORT}`,
    conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s' },
    iptables: { syncPeriod: '10s', minSyncPeriod: '1s' },
    nodePortAddresses: [`${NODE_IP}/32`],
  }
}

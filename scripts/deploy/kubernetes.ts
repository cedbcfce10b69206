// deploy/k8s/: being written (issue 9).
export function kubernetesFiles(): Record<string, string> {
  return {};
}

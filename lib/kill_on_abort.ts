/**
 * Ends a child process with SIGKILL when `signal` aborts. Not the TERM that
 * `Deno.Command`'s own `signal` sends: `lxc exec` passes TERM on to the
 * command inside the container and goes on waiting, which is no use against
 * a client LXD has hung. Returns a function that stops watching the signal.
 */
export function killOnAbort(
  child: { kill(signal: Deno.Signal): void },
  signal: AbortSignal | undefined,
): () => void {
  if (!signal) return () => {};
  const kill = () => {
    try {
      child.kill("SIGKILL");
    } catch { /* it has exited already */ }
  };
  signal.addEventListener("abort", kill, { once: true });
  return () => signal.removeEventListener("abort", kill);
}

/**
 * Whether a process runs on this machine: signal 0 to its pid. EPERM means it runs under another
 * user (alive); any other error (ESRCH) means it is gone.
 */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

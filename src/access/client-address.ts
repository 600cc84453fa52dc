/**
 * Who the client is (SPEC §13): the socket's peer, or, when that peer is one of
 * `client.trusted_proxies`, the right-most X-Forwarded-For entry that is not itself a trusted proxy
 * (nginx's `real_ip_recursive on`). This is the address allow/deny and `key: client_ip` rate limits see.
 * A proxy that is not trusted cannot move a client anywhere: its X-Forwarded-For is ignored.
 */
import { BlockList, isIP, isIPv6, type Socket } from 'node:net';

/** The peer address of a socket, IPv4-mapped IPv6 (`::ffff:1.2.3.4`) written as plain IPv4. */
export function peerAddress(socket: Socket): string {
  const a = socket.remoteAddress ?? '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

/** One CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a single address; throws an Error saying what is wrong. */
export function addCidr(list: BlockList, text: string): void {
  const slash = text.indexOf('/');
  const addr = slash === -1 ? text : text.slice(0, slash);
  const family = isIP(addr);
  if (family === 0) throw new Error(`"${text}" is not an IPv4 or IPv6 address or CIDR`);
  const type = family === 6 ? 'ipv6' : 'ipv4';
  if (slash === -1) {
    list.addAddress(addr, type);
    return;
  }
  const bitsText = text.slice(slash + 1);
  const bits = Number(bitsText);
  const max = family === 6 ? 128 : 32;
  if (!/^\d{1,3}$/.test(bitsText) || bits > max)
    throw new Error(`"${text}": the prefix length must be 0..${max}`);
  list.addSubnet(addr, bits, type);
}

/** A BlockList of CIDRs and addresses; throws on the first bad one. */
export function buildBlockList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const c of cidrs) addCidr(list, c);
  return list;
}

/** Whether `addr` (a textual IPv4/IPv6 address) is in `list`; a non-address is never in it. */
export function inList(list: BlockList, addr: string): boolean {
  const family = isIP(addr);
  if (family === 0) return false;
  return list.check(addr, family === 6 ? 'ipv6' : 'ipv4');
}

/** `client.trusted_proxies`, compiled once per config load. */
export class TrustedProxies {
  readonly #list: BlockList | undefined;

  constructor(cidrs: readonly string[]) {
    this.#list = cidrs.length === 0 ? undefined : buildBlockList(cidrs);
  }

  /** Whether the peer's X-Forwarded-* headers are to be believed (and extended). */
  isTrusted(addr: string): boolean {
    return this.#list?.check(addr, isIPv6(addr) ? 'ipv6' : 'ipv4') === true;
  }

  /**
   * The client address of a request from `peer` carrying X-Forwarded-For `xff` (all its values joined
   * with ", "): the peer itself unless it is trusted; else the right-most entry that is not trusted.
   * An entry that is not an address (garbage, `unknown`, a port) ends the walk: the hop that wrote it
   * is the client. When every entry is trusted, the left-most one is.
   */
  clientOf(peer: string, xff: string | undefined): string {
    const list = this.#list;
    if (list === undefined || xff === undefined || !inList(list, peer)) return peer;
    let hop = peer;
    let end = xff.length;
    while (end > 0) {
      const start = xff.lastIndexOf(',', end - 1);
      let entry = xff.slice(start + 1, end).trim();
      if (entry.startsWith('::ffff:')) entry = entry.slice(7);
      if (isIP(entry) === 0) return hop;
      if (!inList(list, entry)) return entry;
      hop = entry;
      end = start === -1 ? 0 : start;
    }
    return hop;
  }
}

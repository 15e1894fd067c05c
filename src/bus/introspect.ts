import { readFileSync } from 'node:fs';
import { packageFile } from '../paths.js';

/** One method as the interface XML declares it. */
export interface MethodSig {
  in: string;
  out: string;
}

export interface InterfaceDef {
  name: string;
  /** The <interface>…</interface> element, verbatim, for Introspect. */
  xml: string;
  methods: Map<string, MethodSig>;
}

/**
 * Reads an interface from the project's XML file, the one source of truth for introspection
 * and for the argument signatures the router enforces. The files are ours and simple, so a
 * small parser does.
 */
export function parseInterfaceXml(xml: string, name: string): InterfaceDef {
  const start = xml.indexOf(`<interface name="${name}">`);
  const end = xml.indexOf('</interface>', start);
  if (start < 0 || end < 0) throw new Error(`interface ${name} not found in its XML`);
  const body = xml.slice(start, end + '</interface>'.length).replace(/<!--[\s\S]*?-->/g, '');
  const methods = new Map<string, MethodSig>();
  const methodRe = /<method name="([A-Za-z0-9_]+)"\s*(\/>|>([\s\S]*?)<\/method>)/g;
  for (const m of body.matchAll(methodRe)) {
    const sig: MethodSig = { in: '', out: '' };
    for (const a of (m[3] ?? '').matchAll(/<arg\b([^>]*)\/>/g)) {
      const attrs = a[1] ?? '';
      const type = /type="([^"]+)"/.exec(attrs)?.[1] ?? '';
      const dir = /direction="(in|out)"/.exec(attrs)?.[1] ?? 'in';
      sig[dir as 'in' | 'out'] += type;
    }
    methods.set(m[1] as string, sig);
  }
  const pretty = body
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .join('\n');
  return { name, xml: pretty, methods };
}

export function loadInterface(name: string): InterfaceDef {
  const file = packageFile(`dbus/${name}.xml`, `/usr/share/dbus-1/interfaces/${name}.xml`);
  return parseInterfaceXml(readFileSync(file, 'utf8'), name);
}

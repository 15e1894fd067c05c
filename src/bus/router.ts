import { readFileSync } from 'node:fs';
import type { InterfaceDef } from './introspect.js';
import type { CallHandler, CallReply, IncomingCall } from './types.js';

/** A method implementation; the router has already checked the input signature. */
export type MethodImpl = (call: IncomingCall) => Promise<CallReply> | CallReply;

export interface ExportedInterface {
  def: InterfaceDef;
  impl: Record<string, MethodImpl>;
}

export interface ExportedObject {
  path: string;
  interfaces: ExportedInterface[];
}

const STANDARD_XML = `<interface name="org.freedesktop.DBus.Introspectable">
<method name="Introspect"><arg name="xml_data" type="s" direction="out"/></method>
</interface>
<interface name="org.freedesktop.DBus.Peer">
<method name="Ping"/>
<method name="GetMachineId"><arg name="machine_uuid" type="s" direction="out"/></method>
</interface>
<interface name="org.freedesktop.DBus.Properties">
<method name="Get"><arg name="interface_name" type="s" direction="in"/><arg name="property_name" type="s" direction="in"/><arg name="value" type="v" direction="out"/></method>
<method name="GetAll"><arg name="interface_name" type="s" direction="in"/><arg name="properties" type="a{sv}" direction="out"/></method>
<method name="Set"><arg name="interface_name" type="s" direction="in"/><arg name="property_name" type="s" direction="in"/><arg name="value" type="v" direction="in"/></method>
<signal name="PropertiesChanged"><arg name="interface_name" type="s"/><arg name="changed_properties" type="a{sv}"/><arg name="invalidated_properties" type="as"/></signal>
</interface>`;

const DOCTYPE =
  '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n';

export const err = (name: string, message: string): CallReply => ({ kind: 'error', name, message });
export const ret = (signature = '', body: unknown[] = []): CallReply => ({ kind: 'return', signature, body });

function machineId(): string | null {
  for (const f of ['/etc/machine-id', '/var/lib/dbus/machine-id']) {
    try {
      return readFileSync(f, 'utf8').trim();
    } catch {
      // try the next one
    }
  }
  return null;
}

/**
 * Routes incoming calls to the exported objects with the behaviour D-Bus clients expect of a
 * well-behaved service: Introspectable, Peer and Properties on our objects, introspection of
 * the parent paths, and UnknownObject / UnknownInterface / UnknownMethod / InvalidArgs errors
 * instead of silence or a crash.
 */
export function createRouter(objects: ExportedObject[]): CallHandler {
  const byPath = new Map(objects.map((o) => [o.path, o]));

  const childrenOf = (path: string): string[] => {
    const prefix = path === '/' ? '/' : `${path}/`;
    const kids = new Set<string>();
    for (const p of byPath.keys()) {
      if (p.startsWith(prefix) && p !== path) kids.add(p.slice(prefix.length).split('/')[0] as string);
    }
    return [...kids].sort();
  };

  const introspect = (path: string): string => {
    const obj = byPath.get(path);
    const parts = [DOCTYPE, '<node>\n'];
    if (obj !== undefined) {
      parts.push(STANDARD_XML, '\n');
      for (const i of obj.interfaces) parts.push(i.def.xml, '\n');
    }
    for (const c of childrenOf(path)) parts.push(`<node name="${c}"/>\n`);
    parts.push('</node>\n');
    return parts.join('');
  };

  return (call: IncomingCall) => {
    const obj = byPath.get(call.path);
    const { iface, member, signature } = call;

    if (iface === 'org.freedesktop.DBus.Peer' || (iface === undefined && (member === 'Ping' || member === 'GetMachineId'))) {
      if (member === 'Ping' && signature === '') return ret();
      if (member === 'GetMachineId' && signature === '') {
        const id = machineId();
        return id === null ? err('org.freedesktop.DBus.Error.FileNotFound', 'no machine id on this host') : ret('s', [id]);
      }
    }
    if (iface === 'org.freedesktop.DBus.Introspectable' && member === 'Introspect') {
      if (signature !== '') return err('org.freedesktop.DBus.Error.InvalidArgs', `Introspect takes no arguments, got '${signature}'`);
      if (obj === undefined && childrenOf(call.path).length === 0) return err('org.freedesktop.DBus.Error.UnknownObject', `no object at ${call.path}`);
      return ret('s', [introspect(call.path)]);
    }
    if (obj === undefined) return err('org.freedesktop.DBus.Error.UnknownObject', `no object at ${call.path}`);

    if (iface === 'org.freedesktop.DBus.Properties') {
      const known = (name: unknown): boolean => obj.interfaces.some((i) => i.def.name === name);
      // Our interfaces have no properties: answer as an object without any would.
      if (member === 'GetAll' && signature === 's') {
        return known(call.body[0]) || call.body[0] === '' ? ret('a{sv}', [{}]) : err('org.freedesktop.DBus.Error.UnknownInterface', `no interface ${String(call.body[0])}`);
      }
      if (member === 'Get' && signature === 'ss') return err('org.freedesktop.DBus.Error.UnknownProperty', `no property ${String(call.body[1])}`);
      if (member === 'Set' && signature === 'ssv') return err('org.freedesktop.DBus.Error.UnknownProperty', `no property ${String(call.body[1])}`);
      if (['Get', 'GetAll', 'Set'].includes(member)) return err('org.freedesktop.DBus.Error.InvalidArgs', `wrong arguments '${signature}' for Properties.${member}`);
      return err('org.freedesktop.DBus.Error.UnknownMethod', `no method ${member} on org.freedesktop.DBus.Properties`);
    }

    // A call without an interface goes to the first of our interfaces that has the member.
    const target = iface === undefined ? obj.interfaces.find((i) => i.def.methods.has(member)) : obj.interfaces.find((i) => i.def.name === iface);
    if (target === undefined) {
      if (iface === undefined) return err('org.freedesktop.DBus.Error.UnknownMethod', `no method ${member} at ${call.path}`);
      return err('org.freedesktop.DBus.Error.UnknownInterface', `no interface ${iface} at ${call.path}`);
    }
    const sig = target.def.methods.get(member);
    const impl = target.impl[member];
    if (sig === undefined || impl === undefined) return err('org.freedesktop.DBus.Error.UnknownMethod', `no method ${member} on ${target.def.name}`);
    if (signature !== sig.in) {
      return err('org.freedesktop.DBus.Error.InvalidArgs', `${target.def.name}.${member} takes '${sig.in}', got '${signature}'`);
    }
    return impl(call);
  };
}

import { describe, expect, it } from 'vitest';
import { parseExportDb } from '../../src/sources/exportdb.js';

describe('parseExportDb', () => {
  it('parses blocks, keeps values with = and spaces, fills DEVPATH from P:', () => {
    const text = [
      'P: /devices/a/usb1/1-1',
      'N: bus/usb/001/004',
      'E: DEVPATH=/devices/a/usb1/1-1',
      'E: SUBSYSTEM=usb',
      'E: ID_MODEL_ENC=Ultra\\x20Fit',
      'E: X=a=b c',
      '',
      'P: /devices/virtual/misc/foo',
      'L: 0',
      'E: SUBSYSTEM=misc',
      '',
    ].join('\n');
    const devs = parseExportDb(text);
    expect(devs).toHaveLength(2);
    expect(devs[0]).toEqual({
      devpath: '/devices/a/usb1/1-1',
      properties: { DEVPATH: '/devices/a/usb1/1-1', SUBSYSTEM: 'usb', ID_MODEL_ENC: 'Ultra\\x20Fit', X: 'a=b c' },
    });
    expect(devs[1]?.properties).toEqual({ SUBSYSTEM: 'misc', DEVPATH: '/devices/virtual/misc/foo' });
  });

  it('ignores garbage lines and empty input', () => {
    expect(parseExportDb('')).toEqual([]);
    expect(parseExportDb('E: A=1\nnonsense\n')).toEqual([]);
  });
});

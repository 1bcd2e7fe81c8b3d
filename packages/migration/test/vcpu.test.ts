import { afterEach, describe, expect, it } from 'vitest';
import { KVM_MP_STATE_RUNNABLE, LapicReg, Msr } from '@kvmts/kvm-core';
import { applyState, captureState, quiesceVcpu, restoreVcpu, saveVcpu } from '../src/index.js';
import { TestMachine, blankLike, closeAll } from './guest.js';

afterEach(closeAll);

const u32 = (b: Uint8Array, off: number): number => new DataView(b.buffer, b.byteOffset).getUint32(off, true);

describe('vCPU and VM state in the documented order', () => {
  it('the TSC, the LAPIC timer and the guest clock come back exactly as saved', () => {
    const a = new TestMachine({ irqchip: true });
    a.run({ untilCount: 2 });
    // Arm a masked periodic LAPIC timer so that its current count is live state.
    const lapic = a.vcpu.getLapic();
    const dv = new DataView(lapic.buffer);
    dv.setUint32(LapicReg.SVR, 0x1ff, true);
    dv.setUint32(LapicReg.TIMER_DIVIDE, 0xb, true);
    dv.setUint32(LapicReg.LVT_TIMER, 0x300ff | 0x20000, true);
    dv.setUint32(LapicReg.TIMER_INITIAL, 0x7fffffff, true);
    dv.setUint32(LapicReg.TIMER_CURRENT, 0x7fffffff, true); // KVM_SET_LAPIC resumes from the current count
    a.vcpu.setLapic(lapic);
    a.run({ untilCount: 4 });
    a.pause();
    const state = captureState(a);
    const tsc = a.vcpu.getMsrs([Msr.TSC])[0]!.data;
    const current = u32(a.vcpu.getLapic(), LapicReg.TIMER_CURRENT);
    expect(current).toBeGreaterThan(0);
    expect(current).toBeLessThan(0x7fffffff);

    const b = blankLike({ irqchip: true });
    b.ram.set(a.ram);
    b.pause();
    applyState(b, JSON.parse(JSON.stringify(state)));
    expect(b.vm.getClock()).toBe(a.vm.getClock());
    expect(b.vcpu.getMsrs([Msr.TSC])[0]!.data).toBe(tsc);
    expect(u32(b.vcpu.getLapic(), LapicReg.TIMER_CURRENT)).toBe(current);
    expect(b.vcpu.getSregs()).toEqual(a.vcpu.getSregs());
    expect(b.vcpu.getRegs()).toEqual(a.vcpu.getRegs());
    expect(b.vcpu.getFpu()).toEqual(a.vcpu.getFpu());
    expect(b.vcpu.getVcpuEvents()).toEqual(a.vcpu.getVcpuEvents());
    expect(b.vcpu.getMpState()).toBe(KVM_MP_STATE_RUNNABLE);
    expect(b.vm.getIrqchip(2)).toEqual(a.vm.getIrqchip(2));
    expect(b.vm.getPit2()).toEqual(a.vm.getPit2());
  });

  it('saveVcpu/restoreVcpu work without an in-kernel irqchip (no LAPIC, no MP state)', () => {
    const a = new TestMachine();
    a.run({ untilCount: 1 });
    quiesceVcpu(a.vcpu);
    const s = saveVcpu(a.vcpu, a.kvm.getMsrIndexList());
    expect(s.lapic).toBeUndefined();
    const b = blankLike({});
    restoreVcpu(b.vcpu, s);
    expect(b.vcpu.getRegs()).toEqual(a.vcpu.getRegs());
  });

  it('a rejected vCPU state names the step', () => {
    const a = new TestMachine();
    quiesceVcpu(a.vcpu);
    const s = saveVcpu(a.vcpu, a.kvm.getMsrIndexList());
    const b = blankLike({});
    expect(() => restoreVcpu(b.vcpu, { ...s, msrs: [...s.msrs, { index: 0xdead, data: 1 }] })).toThrow(/restoring vCPU 0: KVM_SET_MSRS failed: only \d+ of \d+ MSRs were accepted \(MSR 0xdead is unknown here\)/);
    expect(() => restoreVcpu(b.vcpu, { ...s, lapic: 'AAAA' })).toThrow(/KVM_SET_LAPIC failed: .*is 3 bytes, expected 1024|the VM has no in-kernel irqchip/);
  });
});

"""The region's net charge: openmm_nnp.region.regionCharge and checkChargeSupport."""

import openmm
import pytest

from openmm_nnp.region import NET_CHARGE_TOLERANCE, checkChargeSupport, regionCharge


def _system(charges, nonbonded=True):
    system = openmm.System()
    force = openmm.NonbondedForce()
    for q in charges:
        system.addParticle(12.0)
        force.addParticle(q, 0.3, 0.5)
    if nonbonded:
        system.addForce(force)
    return system


# Acetate-like charges (-1 in total over atoms 0-3), then a sodium ion (atom 4) and a neutral water (5-7).
CHARGES = [0.1, -0.8, -0.75, 0.45 - 1e-4, 1.0, -0.834, 0.417, 0.417]


def test_mm_charge_is_rounded():
    system = _system(CHARGES)
    assert regionCharge(system, [0, 1, 2, 3]) == -1  # sums to -1.0001: an integer within the tolerance
    assert regionCharge(system, [4]) == 1
    assert regionCharge(system, [5, 6, 7]) == 0
    assert regionCharge(system, [0, 1, 2, 3, 4]) == 0
    assert isinstance(regionCharge(system, [4]), int)


def test_non_integer_mm_charge_refused():
    system = _system(CHARGES)
    with pytest.raises(ValueError, match=r'sum to -0\.7500 e, which is not an integer.*charge=N'):
        regionCharge(system, [2])
    assert NET_CHARGE_TOLERANCE < 0.05


def test_charge_option_checked_against_mm():
    system = _system(CHARGES)
    assert regionCharge(system, [0, 1, 2, 3], charge=-1) == -1
    assert regionCharge(system, [0, 1, 2, 3], charge=-1.0) == -1
    with pytest.raises(ValueError, match=r'charge=0 contradicts.*sum to -1\.0001 e; pass charge=-1'):
        regionCharge(system, [0, 1, 2, 3], charge=0)
    with pytest.raises(ValueError, match=r"charge=0\.5 is not an integer"):
        regionCharge(system, [0, 1, 2, 3], charge=0.5)
    with pytest.raises(ValueError, match=r"charge='-1' is not an integer"):
        regionCharge(system, [0, 1, 2, 3], charge='-1')


def test_charge_option_overrides_non_integer_mm_charge():
    assert regionCharge(_system(CHARGES), [2], charge=-1) == -1


def test_no_nonbonded_force():
    system = _system(CHARGES, nonbonded=False)
    assert regionCharge(system, [0, 1, 2, 3]) == 0
    assert regionCharge(system, [0, 1, 2, 3], charge=2) == 2
    assert regionCharge(None, [0], charge=-1) == -1


def test_neutral_only_model_refuses_charged_region():
    checkChargeSupport(0, 'ANI-2x', False, ['so3lr'])
    checkChargeSupport(-1, 'SO3LR', True)
    checkChargeSupport(-1, 'the model x.pt', None)  # unknown: not checked
    with pytest.raises(ValueError, match=r'net charge of -1 e, but ANI-2x was trained on neutral.*'
                                         r'Models that take a net charge: so3lr, aimnet2\.'):
        checkChargeSupport(-1, 'ANI-2x', False, ['so3lr', 'aimnet2'])
    with pytest.raises(ValueError, match=r'net charge of \+2 e'):
        checkChargeSupport(2, 'ANI-1x', False)

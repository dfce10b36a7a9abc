"""Chemical element symbols, for the error messages that name unsupported elements."""
from typing import List

ELEMENT_SYMBOLS: List[str] = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb "
    "Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf "
    "Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh "
    "Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og").split()
"""``ELEMENT_SYMBOLS[Z]`` is the symbol of atomic number Z (1..118); index 0 is a placeholder."""


def describe_element(z: int, symbols: List[str]) -> str:
    """``'Na (Z=11)'`` for a known atomic number, ``'Z=<z>'`` otherwise. TorchScript-compatible: scripted
    models pass their own copy of :data:`ELEMENT_SYMBOLS` as ``symbols``."""
    if 0 < z < len(symbols):
        return symbols[z] + " (Z=" + str(z) + ")"
    return "Z=" + str(z)

/* A stand-in for bcryptprimitives.dll on Wine releases before 9.x, which
 * lack it: Rust's standard library imports ProcessPrng from there. Used by
 * .ci/windows-smoke only, never shipped. It fills the buffer from
 * RtlGenRandom (advapi32!SystemFunction036), which takes a ULONG length. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG n = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}

using System.Collections;

namespace Vdisk.Collections;

/// <summary>
/// A read-only view of a <see cref="List{T}"/> whose <c>foreach</c> uses the list's struct
/// enumerator. Exposed as <see cref="IReadOnlyList{T}"/>, every loop over it is four interface
/// calls; under NativeAOT each call site's first interface call resolves a dispatch cell and
/// writes its page, which the graph's and options' loops paid at every start-up
/// (docs/architecture.md, "Start-up"). LINQ still works, through the interface.
/// </summary>
public readonly struct ListView<T>(List<T> list) : IReadOnlyList<T>
{
    /// <summary>Number of items.</summary>
    public int Count => list.Count;

    /// <summary>The item at <paramref name="index"/>.</summary>
    public T this[int index] => list[index];

    /// <summary>A copy of the items (to loop over while the list changes).</summary>
    public T[] ToArray() => list.ToArray();

    /// <summary>The list's own enumerator (it throws if the list changes during the loop).</summary>
    public List<T>.Enumerator GetEnumerator() => list.GetEnumerator();

    IEnumerator<T> IEnumerable<T>.GetEnumerator() => list.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => list.GetEnumerator();
}

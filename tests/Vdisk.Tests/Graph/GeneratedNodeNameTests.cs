using System.Globalization;
using Vdisk.Graph;
using Xunit;

namespace Vdisk.Tests.Graph;

public class GeneratedNodeNameTests
{
    [Fact]
    public void Generated_names_are_block_and_a_decimal_counter_that_rises_by_one()
    {
        // Tests run in parallel and share the counter: the names must still be distinct, decimal
        // and increasing in the order they were made.
        var names = Enumerable.Range(0, 200).Select(_ => BlockGraph.GenerateName()).ToList();
        var numbers = names.Select(n =>
        {
            Assert.StartsWith("#block", n, StringComparison.Ordinal);
            string digits = n["#block".Length..];
            Assert.Matches("^[1-9][0-9]*$", digits);
            long number = long.Parse(digits, CultureInfo.InvariantCulture);
            Assert.Equal(number.ToString(CultureInfo.InvariantCulture), digits);
            return number;
        }).ToList();
        Assert.Equal(numbers.OrderBy(x => x), numbers);
        Assert.Equal(numbers.Count, numbers.Distinct().Count());
    }
}

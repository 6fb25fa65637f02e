using Kiln.Data.Remote;

namespace Kiln.Data.Tests.Remote;

public sealed class S3LocationTests
{
    [Theory]
    [InlineData("s3://bucket", "bucket", "")]
    [InlineData("s3://bucket/", "bucket", "")]
    [InlineData("S3://my.bucket-1/train/shard-00.tar", "my.bucket-1", "train/shard-00.tar")]
    [InlineData("s3://b/a b/c%20d?e#f", "b", "a b/c%20d?e#f")]
    [InlineData("s3://b//double", "b", "/double")]
    public void Parse_ValidUri_SplitsBucketAndKeyVerbatim(string text, string bucket, string key)
    {
        S3Location location = S3Location.Parse(text);

        location.ShouldBe(new S3Location(bucket, key));
        S3Location.TryParse(text, out S3Location parsed).ShouldBeTrue();
        parsed.ShouldBe(location);
    }

    [Theory]
    [InlineData("http://bucket/key", "it must start with s3://")]
    [InlineData("s3:/bucket/key", "it must start with s3://")]
    [InlineData("s3:///key", "the bucket name is missing")]
    [InlineData("s3://", "the bucket name is missing")]
    [InlineData("s3://bu cket/key", "the bucket name 'bu cket' may hold only")]
    public void Parse_InvalidUri_ThrowsSayingWhy(string text, string why)
    {
        FormatException error = Should.Throw<FormatException>(() => S3Location.Parse(text));

        error.Message.ShouldStartWith($"'{text}' is not an S3 location: {why}");
        S3Location.TryParse(text, out _).ShouldBeFalse();
    }

    [Fact]
    public void ToString_RoundTrips()
    {
        var location = new S3Location("data", "x/y.tar");

        location.ToString().ShouldBe("s3://data/x/y.tar");
        S3Location.Parse(location.ToString()).ShouldBe(location);
        S3Location.TryParse(null, out _).ShouldBeFalse();
    }

    [Theory]
    [InlineData("bytes 0-99/1000", 0L, 99L, 1000L)]
    [InlineData("bytes 500-999/*", 500L, 999L, null)]
    public void TryParseContentRange_ValidHeader_GivesTheRange(string header, long from, long to, long? total)
    {
        S3RangeSource.TryParseContentRange(header, out long parsedFrom, out long parsedTo, out long? parsedTotal).ShouldBeTrue();

        (parsedFrom, parsedTo, parsedTotal).ShouldBe((from, to, total));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("bytes */1000")]
    [InlineData("bytes 9-1/10")]
    [InlineData("items 0-1/2")]
    [InlineData("bytes 0-1")]
    public void TryParseContentRange_OtherHeader_IsFalse(string? header) =>
        S3RangeSource.TryParseContentRange(header, out _, out _, out _).ShouldBeFalse();
}

// Reads files with Hadoop's own classes (from the jars pyspark bundles), for the hdfs sink's
// tests: an independent reader of the SequenceFile and codec stream formats.
//
//   java HadoopRead seq FILE...           per file: "file <path> <valueClass> <compressed>
//                                          <blockCompressed> <codecClass or ->", then one line
//                                          per record: "<key>\t<value bytes as hex>"
//   java HadoopRead stream CODEC FILE     the file decompressed by Hadoop codec class CODEC,
//                                          to standard output
import java.io.InputStream;
import java.io.OutputStream;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.io.BytesWritable;
import org.apache.hadoop.io.LongWritable;
import org.apache.hadoop.io.SequenceFile;
import org.apache.hadoop.io.Text;
import org.apache.hadoop.io.Writable;
import org.apache.hadoop.io.compress.CompressionCodec;
import org.apache.hadoop.util.ReflectionUtils;

public class HadoopRead {
  private static final char[] HEX = "0123456789abcdef".toCharArray();

  static String hex(byte[] b, int n) {
    char[] out = new char[n * 2];
    for (int i = 0; i < n; i++) {
      out[2 * i] = HEX[(b[i] >> 4) & 15];
      out[2 * i + 1] = HEX[b[i] & 15];
    }
    return new String(out);
  }

  public static void main(String[] args) throws Exception {
    Configuration conf = new Configuration();
    if (args[0].equals("stream")) {
      Class<?> cls = Class.forName(args[1]);
      CompressionCodec codec = (CompressionCodec) ReflectionUtils.newInstance(cls, conf);
      FileSystem fs = FileSystem.getLocal(conf);
      try (InputStream in = codec.createInputStream(fs.open(new Path(args[2])))) {
        OutputStream out = System.out;
        byte[] buf = new byte[65536];
        int n;
        while ((n = in.read(buf)) > 0) out.write(buf, 0, n);
        out.flush();
      }
      return;
    }
    StringBuilder sb = new StringBuilder();
    for (int i = 1; i < args.length; i++) {
      try (SequenceFile.Reader r =
          new SequenceFile.Reader(conf, SequenceFile.Reader.file(new Path(args[i])))) {
        String codec = r.getCompressionCodec() == null ? "-" : r.getCompressionCodec().getClass().getName();
        sb.append("file ").append(args[i]).append(' ').append(r.getValueClassName()).append(' ')
            .append(r.isCompressed()).append(' ').append(r.isBlockCompressed()).append(' ')
            .append(codec).append('\n');
        LongWritable key = new LongWritable();
        Writable value = (Writable) ReflectionUtils.newInstance(r.getValueClass(), conf);
        while (r.next(key, value)) {
          sb.append(key.get()).append('\t');
          if (value instanceof BytesWritable) {
            BytesWritable v = (BytesWritable) value;
            sb.append(hex(v.getBytes(), v.getLength()));
          } else {
            Text v = (Text) value;
            sb.append(hex(v.getBytes(), v.getLength()));
          }
          sb.append('\n');
        }
      }
    }
    System.out.print(sb);
  }
}

/** The part of jStat (no published types; CommonJS, so a default import) the eval's intervals use. */
declare module "jstat" {
  const jstat: {
    jStat: {
      studentt: { inv(p: number, dof: number): number };
      normal: { cdf(x: number, mean: number, sd: number): number };
    };
  };
  export default jstat;
}

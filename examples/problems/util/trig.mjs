// A helper file of the heat1d_source example: a module may import files of its own folder.
export const sinPi = (x) => Math.sin(Math.PI * x);
